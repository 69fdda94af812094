//! The floor: the least any watcher can do between kubelet's `..data` swap and the action. A
//! thread blocks in `read` on an inotify descriptor watching the volume directory and, at the
//! rename onto `..data`, sends SIGHUP to this process or makes one HTTP request. No scan, no
//! fingerprint, no checks: what is left is the kernel's event delivery and the action itself.

use std::ffi::CString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// What the floor loop does at each swap.
#[derive(Clone, Copy)]
pub enum FloorAction {
    Signal,
    Http(SocketAddr),
}

/// Starts the loop on its own thread; it runs until the process ends.
pub fn start(dir: &Path, action: FloorAction) {
    // SAFETY: plain syscalls on descriptors this function owns.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    assert!(fd >= 0, "inotify_init1 failed");
    let path = CString::new(dir.as_os_str().as_bytes()).unwrap();
    let wd = unsafe { libc::inotify_add_watch(fd, path.as_ptr(), libc::IN_MOVED_TO) };
    assert!(wd >= 0, "inotify_add_watch failed");
    std::thread::spawn(move || {
        // Like a signal from the daemon, the floor's SIGHUP must wake another thread of this
        // process: blocked here, the kernel cannot deliver it on this thread's return from kill.
        let mut set = nix::sys::signal::SigSet::empty();
        set.add(nix::sys::signal::Signal::SIGHUP);
        let _ = nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_BLOCK,
            Some(&set),
            None,
        );
        let mut buf = [0u8; 4096];
        loop {
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return;
            }
            // Only the rename onto `..data` is a move in kubelet's sequence.
            if !buf[..n as usize].windows(6).any(|w| w == b"..data") {
                continue;
            }
            match action {
                FloorAction::Signal => unsafe {
                    libc::kill(libc::getpid(), libc::SIGHUP);
                },
                FloorAction::Http(addr) => {
                    if let Ok(mut s) = TcpStream::connect(addr) {
                        let _ = s.set_nodelay(true);
                        let _ = s.write_all(
                            b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
                        );
                        let mut sink = [0u8; 256];
                        let _ = s.read(&mut sink);
                    }
                }
            }
        }
    });
}
