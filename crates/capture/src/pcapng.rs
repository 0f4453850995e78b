//! Writing pcapng (draft-ietf-opsawg-pcapng): one Section Header Block,
//! Interface Description Blocks, and Enhanced Packet Blocks with an optional
//! packet comment (opt_comment, option code 1), little-endian.

use std::io::Write;
use std::time::Duration;

use crate::CaptureError;

const SHB: u32 = 0x0a0d_0d0a;
const IDB: u32 = 1;
const EPB: u32 = 6;
const BYTE_ORDER_MAGIC: u32 = 0x1a2b_3c4d;
const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const OPT_SHB_USERAPPL: u16 = 4;
const OPT_IF_TSRESOL: u16 = 9;

/// Writes a pcapng stream. Timestamps are written in nanoseconds
/// (if_tsresol 9) on every interface.
#[derive(Debug)]
pub struct PcapngWriter<W: Write> {
    out: W,
    interfaces: u32,
    packets: u64,
}

fn push_option(buf: &mut Vec<u8>, code: u16, value: &[u8]) {
    buf.extend_from_slice(&code.to_le_bytes());
    buf.extend_from_slice(&(value.len() as u16).to_le_bytes());
    buf.extend_from_slice(value);
    buf.resize(buf.len().div_ceil(4) * 4, 0);
}

impl<W: Write> PcapngWriter<W> {
    /// Start a pcapng stream: writes the Section Header Block naming the
    /// writing application (shb_userappl).
    pub fn new(out: W, application: &str) -> Result<Self, CaptureError> {
        let mut w = PcapngWriter {
            out,
            interfaces: 0,
            packets: 0,
        };
        let mut body = Vec::new();
        body.extend_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
        body.extend_from_slice(&1u16.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&(-1i64).to_le_bytes()); // section length unknown
        push_option(&mut body, OPT_SHB_USERAPPL, application.as_bytes());
        push_option(&mut body, OPT_END, &[]);
        w.block(SHB, &body)?;
        Ok(w)
    }

    fn block(&mut self, kind: u32, body: &[u8]) -> Result<(), CaptureError> {
        let len = (12 + body.len()) as u32;
        self.out.write_all(&kind.to_le_bytes())?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(body)?;
        self.out.write_all(&len.to_le_bytes())?;
        Ok(())
    }

    /// Declare an interface with this LINKTYPE_* and snapshot length;
    /// returns its number for [`PcapngWriter::write_packet`].
    pub fn add_interface(&mut self, link_type: u16, snaplen: u32) -> Result<u32, CaptureError> {
        let mut body = Vec::new();
        body.extend_from_slice(&link_type.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&snaplen.to_le_bytes());
        push_option(&mut body, OPT_IF_TSRESOL, &[9]);
        push_option(&mut body, OPT_END, &[]);
        self.block(IDB, &body)?;
        self.interfaces += 1;
        Ok(self.interfaces - 1)
    }

    /// Append a packet of `interface` at `time` since the Unix epoch;
    /// `orig_len` is its length on the wire (at least `data.len()`); each
    /// comment becomes one opt_comment option (UTF-8).
    pub fn write_packet(
        &mut self,
        interface: u32,
        time: Duration,
        data: &[u8],
        orig_len: u32,
        comments: &[String],
    ) -> Result<(), CaptureError> {
        if data.len() > u32::MAX as usize - 64 {
            return Err(CaptureError::TooLarge(data.len()));
        }
        let ts = u64::try_from(time.as_nanos()).unwrap_or(u64::MAX);
        let mut body = Vec::with_capacity(32 + data.len());
        body.extend_from_slice(&interface.to_le_bytes());
        body.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        body.extend_from_slice(&(ts as u32).to_le_bytes());
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(&orig_len.max(data.len() as u32).to_le_bytes());
        body.extend_from_slice(data);
        body.resize(body.len().div_ceil(4) * 4, 0);
        let mut any = false;
        for c in comments {
            // An option value is at most 65535 bytes: cut on a char boundary.
            let mut end = c.len().min(65_532);
            while !c.is_char_boundary(end) {
                end -= 1;
            }
            push_option(&mut body, OPT_COMMENT, &c.as_bytes()[..end]);
            any = true;
        }
        if any {
            push_option(&mut body, OPT_END, &[]);
        }
        self.block(EPB, &body)?;
        self.packets += 1;
        Ok(())
    }

    /// Packets written so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Flush and return the underlying writer.
    pub fn finish(mut self) -> Result<W, CaptureError> {
        self.out.flush()?;
        Ok(self.out)
    }
}
