//! Sealed segments as zstd frames (`.jsonl.zst`, readable by `zstdcat`), with the C zstd
//! library through `zstd-safe` (the crate compressed rings use too: one codec in the build).
//!
//! A segment is one frame at level 1 with a content checksum, written by streaming the plain
//! file through a compression context in fixed buffers (memory does not grow with the segment).
//! Reading streams it back the same way; a frame that is cut short or damaged ends the data
//! there, and recovery treats what was decoded like any file (a torn last line is cut).

use std::fs::File;
use std::io::{self, Read, Write};

use zstd_safe::zstd_sys::ZSTD_EndDirective;
use zstd_safe::{CCtx, CParameter, DCtx, InBuffer, OutBuffer};

/// zstd level 1: measured on event JSON it compresses within a few percent of level 3 at about
/// twice the speed (see the README's bounded-disk section for the numbers).
const LEVEL: i32 = 1;
/// Bytes read from a file at a time, compressing or decompressing.
const CHUNK: usize = 256 << 10;

fn zstd_error(what: &str, code: usize) -> io::Error {
    io::Error::other(format!("{what}: {}", zstd_safe::get_error_name(code)))
}

/// Reads into `buffer` until it is full or the source ends; the number of bytes read.
fn fill(source: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match source.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(count) => filled += count,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Decodes a segment's zstd frames as a stream of its JSON lines.
pub struct Decoder {
    file: File,
    dctx: DCtx<'static>,
    input: Vec<u8>,
    /// `input[at..len]` is read from the file and not yet decoded.
    at: usize,
    len: usize,
    /// The data ended: end of file, or a damaged frame.
    done: bool,
}

impl Decoder {
    pub fn new(file: File) -> io::Result<Self> {
        let dctx = DCtx::try_create()
            .ok_or_else(|| io::Error::other("cannot create a zstd decompression context"))?;
        Ok(Self {
            file,
            dctx,
            input: vec![0; CHUNK],
            at: 0,
            len: 0,
            done: false,
        })
    }
}

impl Read for Decoder {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        if buffer.is_empty() {
            return Ok(0);
        }
        while !self.done {
            if self.at == self.len {
                // A file error is an error; running out of file ends the data (a frame cut
                // short included).
                self.len = fill(&mut self.file, &mut self.input)?;
                self.at = 0;
                if self.len == 0 {
                    self.done = true;
                    break;
                }
            }
            let mut input = InBuffer {
                src: &self.input[..self.len],
                pos: self.at,
            };
            let mut output = OutBuffer::around(&mut *buffer);
            let result = self.dctx.decompress_stream(&mut output, &mut input);
            let produced = output.pos();
            self.at = input.pos;
            if result.is_err() {
                // Damaged data (or not zstd at all): what was decoded before it stands.
                self.done = true;
            }
            if produced > 0 {
                return Ok(produced);
            }
        }
        Ok(0)
    }
}

/// Compresses all of `source` into `target` as one zstd frame; returns (bytes in, bytes out).
pub fn compress(mut source: File, target: &mut File) -> io::Result<(u64, u64)> {
    let mut cctx = CCtx::try_create()
        .ok_or_else(|| io::Error::other("cannot create a zstd compression context"))?;
    cctx.set_parameter(CParameter::CompressionLevel(LEVEL))
        .map_err(|code| zstd_error("cannot set the zstd level", code))?;
    cctx.set_parameter(CParameter::ChecksumFlag(true))
        .map_err(|code| zstd_error("cannot ask for zstd checksums", code))?;
    let mut input = vec![0u8; CHUNK];
    let mut output: Vec<u8> = Vec::with_capacity(CCtx::out_size().max(CHUNK / 2));
    let (mut read, mut written) = (0u64, 0u64);
    loop {
        let count = fill(&mut source, &mut input)?;
        read += count as u64;
        let last = count < input.len();
        let directive = if last {
            ZSTD_EndDirective::ZSTD_e_end
        } else {
            ZSTD_EndDirective::ZSTD_e_continue
        };
        let mut chunk = InBuffer::around(&input[..count]);
        loop {
            output.clear();
            let mut out = OutBuffer::around(&mut output);
            let left = cctx
                .compress_stream2(&mut out, &mut chunk, directive)
                .map_err(|code| zstd_error("zstd compression failed", code))?;
            target.write_all(&output)?;
            written += output.len() as u64;
            // All input taken, and at the end every byte of the frame flushed out.
            let finished = if last {
                left == 0
            } else {
                chunk.pos() == count
            };
            if finished {
                break;
            }
        }
        if last {
            return Ok((read, written));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("oca-zst-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn sample(lines: usize) -> String {
        (0..lines)
            .map(|i| {
                format!(
                    "{{\"type\":\"t{}\",\"payload\":{{\"n\":{i}}},\"seq\":{i}}}\n",
                    i % 7
                )
            })
            .collect()
    }

    fn round_trip(dir: &std::path::Path, text: &str) -> (u64, u64, Vec<u8>) {
        let plain = dir.join("a.jsonl");
        let packed = dir.join("a.jsonl.zst");
        std::fs::write(&plain, text).unwrap();
        let mut target = File::create(&packed).unwrap();
        let (read, written) = compress(File::open(&plain).unwrap(), &mut target).unwrap();
        assert_eq!(written, std::fs::metadata(&packed).unwrap().len());
        let mut decoded = Vec::new();
        Decoder::new(File::open(&packed).unwrap())
            .unwrap()
            .read_to_end(&mut decoded)
            .unwrap();
        (read, written, decoded)
    }

    #[test]
    fn round_trips_through_a_file() {
        let dir = temp_dir("round-trip");
        // Several input chunks, and an empty file.
        for text in [sample(5000), sample(40_000), String::new()] {
            let (read, written, decoded) = round_trip(&dir, &text);
            assert_eq!(read, text.len() as u64);
            assert!(
                written > 0 && written <= read / 3 + 64,
                "{written} of {read}"
            );
            assert_eq!(decoded, text.as_bytes());
        }
    }

    #[test]
    fn a_frame_cut_short_or_damaged_ends_the_data() {
        let dir = temp_dir("damaged");
        let text = sample(40_000);
        round_trip(&dir, &text);
        let packed = dir.join("a.jsonl.zst");
        let whole = std::fs::read(&packed).unwrap();
        let decode = |bytes: &[u8]| {
            std::fs::write(&packed, bytes).unwrap();
            let mut decoded = Vec::new();
            Decoder::new(File::open(&packed).unwrap())
                .unwrap()
                .read_to_end(&mut decoded)
                .unwrap();
            decoded
        };
        // Cut short: a prefix of the text, never more.
        let cut = decode(&whole[..whole.len() / 2]);
        assert!(text.as_bytes().starts_with(&cut));
        assert!(cut.len() < text.len());
        // Not zstd at all: no data, no error.
        assert!(decode(b"{\"type\":\"a\"}\n").is_empty());
        // Damaged in the middle: decoding stops (or the checksum fails) without an error.
        let mut damaged = whole.clone();
        let middle = damaged.len() / 2;
        for byte in &mut damaged[middle..middle + 16] {
            *byte ^= 0x5a;
        }
        assert_ne!(decode(&damaged), text.as_bytes());
    }
}
