//! Sealed segments as zstd frames (`.jsonl.zst`, readable by `zstdcat`), with `ruzstd`, a pure
//! Rust implementation (no C toolchain in the build; see the README for why and what it costs).
//!
//! ruzstd's encoder panics when its source or drain fails, so both are wrapped here: a failed
//! read or write is remembered and reported as this module's error, never a panic.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};

use ruzstd::decoding::StreamingDecoder;
use ruzstd::encoding::{CompressionLevel, FrameCompressor};

/// Decodes a segment's zstd frame as a stream of its JSON lines.
pub struct Decoder {
    inner: Option<StreamingDecoder<BufReader<File>, ruzstd::decoding::FrameDecoder>>,
}

impl Decoder {
    pub fn new(file: File) -> io::Result<Self> {
        let reader = BufReader::with_capacity(256 << 10, file);
        match StreamingDecoder::new(reader) {
            Ok(decoder) => Ok(Self {
                inner: Some(decoder),
            }),
            // An empty or truncated file has no frame: nothing to read, like an empty segment.
            Err(ruzstd::decoding::errors::FrameDecoderError::ReadFrameHeaderError(_)) => {
                Ok(Self { inner: None })
            }
            Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
        }
    }
}

impl Read for Decoder {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            // A frame cut short (a damaged file) ends the data; recovery treats what was decoded
            // like any file, cutting a torn last line.
            Some(decoder) => match decoder.read(buffer) {
                Ok(count) => Ok(count),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
                Err(_) => {
                    self.inner = None;
                    Ok(0)
                }
            },
            None => Ok(0),
        }
    }
}

/// A reader that never fails: an error ends the data and is kept.
struct Source<R> {
    inner: R,
    read: u64,
    error: Option<io::Error>,
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.inner.read(buffer) {
                Ok(count) => {
                    self.read += count as u64;
                    return Ok(count);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.error.get_or_insert(e);
                    return Ok(0);
                }
            }
        }
    }
}

/// A writer that never fails: after an error it drops everything and keeps the error.
struct Drain<W> {
    inner: W,
    written: u64,
    error: Option<io::Error>,
}

impl<W: Write> Write for Drain<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.error.is_none() {
            match self.inner.write_all(data) {
                Ok(()) => self.written += data.len() as u64,
                Err(e) => self.error = Some(e),
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Compresses all of `source` into `target` as one zstd frame; returns (bytes in, bytes out).
pub fn compress(source: File, target: &mut File) -> io::Result<(u64, u64)> {
    let source = Source {
        inner: BufReader::with_capacity(256 << 10, source),
        read: 0,
        error: None,
    };
    let drain = Drain {
        inner: io::BufWriter::with_capacity(256 << 10, target),
        written: 0,
        error: None,
    };
    let mut compressor = FrameCompressor::new(CompressionLevel::Fastest);
    compressor.set_source(source);
    compressor.set_drain(drain);
    compressor.compress();
    let read = match compressor.source_mut() {
        Some(source) => match source.error.take() {
            Some(e) => return Err(e),
            None => source.read,
        },
        None => return Err(io::Error::other("the compressor lost its source")),
    };
    let Some(drain) = compressor.drain_mut() else {
        return Err(io::Error::other("the compressor lost its drain"));
    };
    if let Some(e) = drain.error.take() {
        return Err(e);
    }
    drain.inner.flush()?;
    Ok((read, drain.written))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_a_file() {
        let dir = std::env::temp_dir().join(format!("oca-zst-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plain = dir.join("a.jsonl");
        let packed = dir.join("a.jsonl.zst");
        let text: String = (0..5000)
            .map(|i| {
                format!(
                    "{{\"type\":\"t{}\",\"payload\":{{\"n\":{i}}},\"seq\":{i}}}\n",
                    i % 7
                )
            })
            .collect();
        std::fs::write(&plain, &text).unwrap();
        let mut target = File::create(&packed).unwrap();
        let (read, written) = compress(File::open(&plain).unwrap(), &mut target).unwrap();
        assert_eq!(read, text.len() as u64);
        assert!(written > 0 && written < read / 3, "{written} of {read}");
        let mut decoded = String::new();
        Decoder::new(File::open(&packed).unwrap())
            .unwrap()
            .read_to_string(&mut decoded)
            .unwrap();
        assert_eq!(decoded, text);
    }
}
