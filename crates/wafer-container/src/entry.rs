//! The entry program of job containers (`entry/entry.c`, built statically by `build.rs`): mounted
//! read-only into every job container, it reads the request's variables from a frame at the start of
//! stdin, adds them to its environment and executes the function's program. A job container can so be
//! created, and kept warm, before its request is known, and its program still sees the request's
//! variables in its environment and the body on its stdin, exactly as if it had been started with them.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Where the entry program is mounted inside a container.
pub const MOUNTED_AT: &str = "/.wafer-entry";

/// The entry program.
const PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/wafer-entry"));

/// The largest frame the entry program accepts.
pub const MAX_FRAME: usize = 1 << 20;

/// Writes the entry program into `dir` (read-only, executable) and returns its path.
pub fn install(dir: &Path) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("wafer-entry");
    if std::fs::read(&path).is_ok_and(|bytes| bytes == PROGRAM) {
        return Ok(path);
    }
    // Written beside it and renamed, so a running container never sees half a program.
    let partial = dir.join(format!("wafer-entry.{}", std::process::id()));
    std::fs::write(&partial, PROGRAM)?;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o555))?;
    std::fs::rename(&partial, &path)?;
    Ok(path)
}

/// The frame carrying `variables` that starts a job container's stdin; `None` when they are larger
/// than the entry program accepts or a name is empty or holds `=` or NUL, or a value holds NUL.
pub fn frame<'a>(variables: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<Vec<u8>> {
    let mut block = Vec::new();
    for (name, value) in variables {
        if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
            return None;
        }
        block.extend_from_slice(name.as_bytes());
        block.push(b'=');
        block.extend_from_slice(value.as_bytes());
        block.push(0);
    }
    if block.len() > MAX_FRAME {
        return None;
    }
    let mut framed = Vec::with_capacity(8 + block.len());
    framed.extend_from_slice(b"WENV");
    framed.extend_from_slice(&(block.len() as u32).to_be_bytes());
    framed.extend_from_slice(&block);
    Some(framed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    fn run(stdin: &[u8], args: &[&str]) -> std::process::Output {
        let dir = tempfile::tempdir().unwrap();
        let program = install(dir.path()).unwrap();
        let mut command = Command::new(program);
        command
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Another test forking at the moment the program was written holds it open for writing
        // until that child execs: the program is busy for a moment.
        let mut tries = 0;
        let mut child = loop {
            match command.spawn() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                spawned => break spawned.unwrap(),
            }
        };
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }

    #[test]
    fn the_program_sees_the_framed_variables_and_the_body_after_them() {
        let mut stdin = frame([("REQUEST_METHOD", "POST"), ("QUERY_STRING", "a=1&b")]).unwrap();
        stdin.extend_from_slice(b"the body");
        let out = run(
            &stdin,
            &["sh", "-c", "echo \"$REQUEST_METHOD $QUERY_STRING\"; cat"],
        );
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "POST a=1&b\nthe body");
    }

    #[test]
    fn stdin_without_a_frame_is_refused_and_a_missing_program_is_127() {
        let out = run(b"no frame here", &["true"]);
        assert_eq!(out.status.code(), Some(126));
        assert!(String::from_utf8_lossy(&out.stderr).contains("does not start with"));
        let out = run(&frame([]).unwrap(), &["/no/such/program"]);
        assert_eq!(out.status.code(), Some(127), "{out:?}");
    }

    #[test]
    fn names_that_cannot_be_variables_are_refused() {
        assert!(frame([("A=B", "1")]).is_none());
        assert!(frame([("", "1")]).is_none());
        assert!(frame([("A", "nul\0")]).is_none());
        let big = "x".repeat(MAX_FRAME);
        assert!(frame([("A", big.as_str())]).is_none());
    }
}
