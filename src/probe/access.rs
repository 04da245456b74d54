//! Can nginx's worker user open a unix socket? The probe itself runs as root (or as the
//! operator), who can connect to almost anything; the workers run as the `user` directive's
//! account and get `(13: Permission denied)` and a 502 where we succeeded.
//!
//! The check follows the kernel's rules for `connect(2)` on a path: search (x) permission on
//! every directory from `/` down, and write permission on the socket file, judged by the
//! worker's uid, gid and supplementary groups (as `initgroups(3)` sets them in the worker).

use std::ffi::{CStr, CString};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The identity nginx's workers run with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// The primary group and every supplementary group of the user.
    pub groups: Vec<u32>,
}

/// Why the worker cannot open a socket: which path lacks which permission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The socket file itself or the directory that cannot be searched.
    pub path: PathBuf,
    pub is_dir: bool,
    pub mode: u32,
    pub owner: String,
    pub group: String,
}

impl Account {
    /// Look up a user as nginx does for `user NAME [GROUP]`: the group defaults to a group named
    /// like the user, then to the user's primary group. `None` when the user does not exist
    /// (nginx -t reports that itself).
    pub fn lookup(user: &str, group: Option<&str>) -> Option<Account> {
        let (uid, primary) = getpwnam(user)?;
        let gid = group
            .and_then(getgrnam)
            .or_else(|| getgrnam(user))
            .unwrap_or(primary);
        let mut groups = grouplist(user, gid);
        if !groups.contains(&gid) {
            groups.push(gid);
        }
        Some(Account {
            user: user.to_string(),
            uid,
            gid,
            groups,
        })
    }

    /// The identity a running process has (`/proc/PID/status`: effective uid and gid, and its
    /// supplementary groups). A master started by a user other than root ignores `user`
    /// (nginx logs `the "user" directive makes sense only if the master process runs with
    /// super-user privileges, ignored`): its workers keep exactly this identity. `None` when
    /// the process is gone or runs as root.
    pub fn of_process(pid: i32) -> Option<Account> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let ids = |key: &str| -> Option<Vec<u32>> {
            let line = status.lines().find_map(|l| l.strip_prefix(key))?;
            Some(
                line.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect(),
            )
        };
        let uid = *ids("Uid:")?.get(1)?;
        let gid = *ids("Gid:")?.get(1)?;
        if uid == 0 {
            return None;
        }
        let mut groups = ids("Groups:").unwrap_or_default();
        if !groups.contains(&gid) {
            groups.push(gid);
        }
        Some(Account {
            user: user_name(uid),
            uid,
            gid,
            groups,
        })
    }

    /// The first path component that stops this account from connecting to `socket`.
    pub fn denial(&self, socket: &Path) -> Option<Denial> {
        if self.uid == 0 {
            return None;
        }
        let mut dirs: Vec<&Path> = socket.ancestors().skip(1).collect();
        dirs.reverse();
        for dir in dirs {
            let meta = std::fs::metadata(dir).ok()?;
            if !self.allowed_at(dir, &meta, 0o1) {
                return Some(denial(dir, &meta, true));
            }
        }
        let meta = std::fs::metadata(socket).ok()?;
        (!self.allowed_at(socket, &meta, 0o2)).then(|| denial(socket, &meta, false))
    }

    /// Owner bits if we own it, else group bits if in the group, else other bits: the kernel
    /// never falls through from a matching class to a more generous one. A path with a POSIX
    /// ACL of its own (php-fpm's `listen.acl_users`) is let through: its entries decide, and
    /// the mode bits alone would refuse what nginx's workers may open.
    fn allowed_at(&self, path: &Path, meta: &std::fs::Metadata, bit: u32) -> bool {
        has_acl(path) || self.allowed(meta, bit)
    }

    fn allowed(&self, meta: &std::fs::Metadata, bit: u32) -> bool {
        let mode = meta.mode();
        let shift = if meta.uid() == self.uid {
            6
        } else if self.groups.contains(&meta.gid()) {
            3
        } else {
            0
        };
        (mode >> shift) & bit != 0
    }
}

/// Whether `path` carries a POSIX access ACL (`system.posix_acl_access`): `setfacl -m
/// u:www-data:rw`, php-fpm's `listen.acl_users`.
fn has_acl(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let (Ok(cpath), Ok(name)) = (
        CString::new(path.as_os_str().as_bytes()),
        CString::new("system.posix_acl_access"),
    ) else {
        return false;
    };
    // SAFETY: both strings are NUL-terminated and live across the call; a null buffer of
    // size 0 asks only for the value's size.
    let n = unsafe { libc::getxattr(cpath.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
    n > 0
}

fn denial(path: &Path, meta: &std::fs::Metadata, is_dir: bool) -> Denial {
    Denial {
        path: path.to_path_buf(),
        is_dir,
        mode: meta.mode() & 0o7777,
        owner: user_name(meta.uid()),
        group: group_name(meta.gid()),
    }
}

/// The buffer size for the reentrant passwd/group lookups; entries beyond it are rare and
/// are then treated as unknown.
const BUF: usize = 16 * 1024;

fn getpwnam(name: &str) -> Option<(u32, u32)> {
    let cname = CString::new(name).ok()?;
    // SAFETY: passwd is plain old data; zeroed is a valid initial value for an out-parameter.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; BUF];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; buf's length is passed with it.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some((pwd.pw_uid, pwd.pw_gid))
}

fn getgrnam(name: &str) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    // SAFETY: group is plain old data; zeroed is a valid initial value for an out-parameter.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; BUF];
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; buf's length is passed with it.
    let rc = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            &mut grp,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some(grp.gr_gid)
}

fn grouplist(user: &str, gid: u32) -> Vec<u32> {
    let Ok(cname) = CString::new(user) else {
        return vec![gid];
    };
    let mut n: libc::c_int = 64;
    loop {
        let mut groups = vec![0 as libc::gid_t; n as usize];
        let asked = n;
        // SAFETY: groups has room for `n` entries and `n` tells getgrouplist so.
        let rc = unsafe { libc::getgrouplist(cname.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if rc >= 0 {
            groups.truncate(n.max(0) as usize);
            return groups;
        }
        if n <= asked || n > 65536 {
            return vec![gid];
        }
    }
}

/// The user name of a uid, or the number when it has none.
pub fn user_name(uid: u32) -> String {
    // SAFETY: passwd is plain old data; zeroed is a valid initial value for an out-parameter.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; BUF];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; buf's length is passed with it.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc == 0 && !result.is_null() {
        // SAFETY: on success pw_name points at a NUL-terminated string inside buf.
        return unsafe { CStr::from_ptr(pwd.pw_name) }
            .to_string_lossy()
            .into_owned();
    }
    uid.to_string()
}

/// The group name of a gid, or the number when it has none.
pub fn group_name(gid: u32) -> String {
    // SAFETY: group is plain old data; zeroed is a valid initial value for an out-parameter.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; BUF];
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; buf's length is passed with it.
    let rc = unsafe { libc::getgrgid_r(gid, &mut grp, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc == 0 && !result.is_null() {
        // SAFETY: on success gr_name points at a NUL-terminated string inside buf.
        return unsafe { CStr::from_ptr(grp.gr_name) }
            .to_string_lossy()
            .into_owned();
    }
    gid.to_string()
}
