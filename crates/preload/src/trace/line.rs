//! One trace line ([`Ev`]): formatted on the stack, written with one `write(2)` to the
//! trace descriptor (opened again, and checked, when the program closed it).

use super::*;

pub(super) const CAP: usize = 3800;

/// One trace line on the stack. If it would overflow, [`Ev::finish`] writes a short valid
/// line marked `"truncated":true` instead of a broken one.
pub struct Ev {
    buf: [u8; CAP + 64],
    len: usize,
    head: usize,
    overflow: bool,
}

impl Write for Ev {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.len + s.len() > CAP {
            self.overflow = true;
            return Ok(());
        }
        self.buf[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
        self.len += s.len();
        Ok(())
    }
}

impl Ev {
    /// `{"v":1,...,"ev":KIND,"call":CALL,"fd":FD`
    pub fn begin(kind: &str, call: &str, fd: i32) -> Ev {
        let mut e = Ev {
            buf: [0; CAP + 64],
            len: 0,
            head: 0,
            overflow: false,
        };
        let mono = now_mono();
        let wall = sys::clock_ns(libc::CLOCK_REALTIME);
        let _ = write!(
            e,
            "{{\"v\":1,\"t_mono_ns\":{},\"t_wall_ns\":{},\"pid\":{},\"tid\":{},\"prog\":",
            mono,
            wall,
            pid(),
            tid()
        );
        let prog = PROG.get().map(|(p, n)| &p[..*n]).unwrap_or(b"?");
        e.bytes_str(prog);
        let _ = write!(
            e,
            ",\"ev\":\"{}\",\"call\":\"{}\",\"fd\":{}",
            kind, call, fd
        );
        e.head = e.len;
        e
    }

    /// `,"k":`
    pub fn key(&mut self, k: &str) -> &mut Ev {
        let _ = write!(self, ",\"{}\":", k);
        self
    }

    /// Opens `,"args":{` (close with [`Ev::close_obj`]); the first key inside goes without comma.
    pub fn open_obj(&mut self, k: &str) {
        let _ = write!(self, ",\"{}\":{{", k);
    }

    pub fn close_obj(&mut self) {
        let _ = self.write_str("}");
    }

    /// A key as the first member of an object.
    pub fn first(&mut self, k: &str) -> &mut Ev {
        let _ = write!(self, "\"{}\":", k);
        self
    }

    pub fn int(&mut self, v: i64) {
        let _ = write!(self, "{}", v);
    }

    pub fn raw(&mut self, s: &str) {
        let _ = self.write_str(s);
    }

    /// An unsigned integer in decimal, without core::fmt.
    pub fn uint(&mut self, mut v: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        // ASCII digits are UTF-8.
        let _ = self.write_str(core::str::from_utf8(&digits[i..]).unwrap_or("0"));
    }

    /// A JSON string of a `Display` value (escaped).
    pub fn disp(&mut self, v: impl fmt::Display) {
        let mut s = Esc(self);
        let _ = s.0.write_str("\"");
        let _ = write!(s, "{}", v);
        let _ = s.0.write_str("\"");
    }

    pub fn str(&mut self, s: &str) {
        self.bytes_str(s.as_bytes())
    }

    /// A JSON string of bytes: printable ASCII as is, everything else `\u00XX`.
    pub fn bytes_str(&mut self, b: &[u8]) {
        let _ = self.write_str("\"");
        for &c in b {
            match c {
                b'"' => {
                    let _ = self.write_str("\\\"");
                }
                b'\\' => {
                    let _ = self.write_str("\\\\");
                }
                0x20..=0x7e => {
                    let ch = [c];
                    // Printable ASCII is UTF-8.
                    let _ = self.write_str(core::str::from_utf8(&ch).unwrap_or("?"));
                }
                _ => {
                    let _ = write!(self, "\\u{:04x}", c);
                }
            }
        }
        let _ = self.write_str("\"");
    }

    /// `,"ret":R` and `,"errno":"E..."` when the call failed.
    pub fn result(&mut self, ret: i64, errno: i32) {
        self.key("ret").int(ret);
        if ret < 0 {
            self.key("errno").str(errno_short(errno));
        }
    }

    /// Closes the object and writes the line with one write(2).
    pub fn finish(mut self) {
        if self.overflow {
            self.len = self.head;
            self.overflow = false;
            let _ = self.write_str(",\"truncated\":true");
        }
        self.buf[self.len] = b'}';
        self.buf[self.len + 1] = b'\n';
        self.len += 2;
        if let Some(fd) = out_fd() {
            sys::write_all(fd, &self.buf[..self.len]);
        }
    }
}

pub(super) fn ours(fd: i32) -> bool {
    fd >= 0 && sys::inode(fd) == Some((DEV.load(Relaxed), INO.load(Relaxed)))
}

/// The trace descriptor. Programs that close every descriptor at start (OpenSSH's
/// `closefrom`, daemons) close ours too, and the number may then be reused by the program:
/// the close hooks say so ([`note_closed`]), and then the trace file is opened again
/// (open(2) and fcntl(2) are async-signal-safe) and accepted only if it is the same file
/// (device and inode).
pub(super) fn out_fd() -> Option<i32> {
    let fd = FD.load(Relaxed);
    if fd >= 0 {
        return Some(fd);
    }
    let path = PATH.get()?;
    let new = crate::log::open_append(path, false);
    if new < 0 {
        ON.store(false, Relaxed); // removed: the trace is over
        return None;
    }
    if !ours(new) {
        // Replaced or removed and re-created: not the trace we started; stop.
        sys::close(new);
        ON.store(false, Relaxed);
        return None;
    }
    match FD.compare_exchange(fd, new, Relaxed, Relaxed) {
        Ok(_) => Some(new),
        Err(other) => {
            // Another thread reopened it first.
            sys::close(new);
            Some(other)
        }
    }
}

/// Escapes what `Display` writes into a JSON string.
pub(super) struct Esc<'a>(&'a mut Ev);

impl Write for Esc<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            match c {
                '"' => self.0.write_str("\\\"")?,
                '\\' => self.0.write_str("\\\\")?,
                c if (c as u32) < 0x20 => write!(self.0, "\\u{:04x}", c as u32)?,
                c => self.0.write_char(c)?,
            }
        }
        Ok(())
    }
}
