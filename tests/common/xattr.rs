//! The extended-attribute system calls for tests on a mount, errors as errno values. The `l`
//! variants: a symlink's own attributes, never its target's.
#![allow(dead_code)]

use std::ffi::CString;
use std::path::Path;

pub fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}

pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub fn setx(p: &Path, name: &str, v: &[u8], flags: i32) -> Result<(), i32> {
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings and a value buffer of v.len() bytes.
    let r = unsafe {
        libc::lsetxattr(
            cpath(p).as_ptr(),
            n.as_ptr(),
            v.as_ptr().cast(),
            v.len(),
            flags,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

pub fn getx(p: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let n = CString::new(name).unwrap();
    // SAFETY: a size probe (null buffer), then a read into a buffer of that size.
    let len = unsafe { libc::lgetxattr(cpath(p).as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
    if len < 0 {
        return Err(errno());
    }
    let mut buf = vec![0u8; len as usize];
    let got = unsafe {
        libc::lgetxattr(
            cpath(p).as_ptr(),
            n.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if got < 0 {
        return Err(errno());
    }
    buf.truncate(got as usize);
    Ok(buf)
}

pub fn removex(p: &Path, name: &str) -> Result<(), i32> {
    let n = CString::new(name).unwrap();
    // SAFETY: NUL-terminated path and name.
    if unsafe { libc::lremovexattr(cpath(p).as_ptr(), n.as_ptr()) } == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// listxattr into a buffer of `size` bytes (0: the size probe): (the size it answers, the list).
pub fn listx_sized(p: &Path, size: usize) -> Result<(usize, Vec<u8>), i32> {
    let mut buf = vec![0u8; size.max(1)];
    // SAFETY: a buffer of at least `size` bytes; size 0 passes a null pointer.
    let n = unsafe {
        libc::llistxattr(
            cpath(p).as_ptr(),
            if size == 0 {
                std::ptr::null_mut()
            } else {
                buf.as_mut_ptr().cast()
            },
            size,
        )
    };
    if n < 0 {
        return Err(errno());
    }
    buf.truncate(n as usize);
    Ok((n as usize, buf))
}

/// The names listxattr gives (as many as the kernel's largest answer holds), in its order.
pub fn listx(p: &Path) -> Vec<String> {
    let (_, list) = listx_sized(p, 65536).unwrap_or_else(|e| panic!("listxattr: errno {e}"));
    list.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}
