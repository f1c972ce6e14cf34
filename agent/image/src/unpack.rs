//! Safe layer unpacking into an overlayfs lower directory.
//!
//! A layer is untrusted input. Every entry name is split into components and resolved one
//! component at a time inside the layer's own directory with `lstat`, never following a
//! symlink: an entry is refused when its name is absolute, contains `..`, or passes through a
//! symlink — one placed by an earlier entry of the same layer, or one that a lower layer shows
//! at that path in the merged view. Hardlink targets are resolved the same way and must be in
//! the same layer. Files are created with `O_CREAT|O_EXCL|O_NOFOLLOW`. Nothing is ever written
//! through a path the layer controls, so nothing lands outside the directory.
//!
//! Whiteouts become overlayfs whiteouts (`.wh.NAME` → a 0:0 character device `NAME`;
//! `.wh..wh..opq` → `trusted.overlay.opaque=y` on the directory). Ownership, modes (setuid
//! included), xattrs (except `trusted.overlay.*`, which only kapsel sets) and mtimes are kept.
//! Device nodes are skipped unless [`UnpackOptions::allow_device_nodes`].
//!
//! The uncompressed stream is hashed while it is read; the caller compares it with the image
//! config's `diff_id`.

use std::ffi::{CString, OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use sha2::{Digest, Sha256};

use crate::error::{ImageError, Result};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Unpack options.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnpackOptions {
    /// Create block and character device nodes (privileged use only). Otherwise they are skipped.
    pub allow_device_nodes: bool,
}

/// What an unpack produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    /// `sha256:` of the uncompressed tar stream.
    pub diff_id: String,
    /// Bytes of regular file content written.
    pub size: u64,
    pub entries: u64,
}

/// A reader that hashes what passes through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    pub(crate) fn finish(self) -> (String, u64) {
        (
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.count,
        )
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// The compression of a layer blob, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

pub(crate) fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

fn decompressor<'a, R: BufRead + 'a>(mut r: R) -> io::Result<Box<dyn Read + 'a>> {
    let head = r.fill_buf()?;
    Ok(match sniff(head) {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
        Compression::None => Box::new(r),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    Symlink,
    Whiteout,
    Other,
}

fn kind_of(md: &std::fs::Metadata) -> Kind {
    let ft = md.file_type();
    if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_char_device() && md.rdev() == 0 {
        Kind::Whiteout
    } else {
        Kind::Other
    }
}

fn lstat(p: &Path) -> Option<std::fs::Metadata> {
    std::fs::symlink_metadata(p).ok()
}

/// What the merged (overlayfs) view of `lowers` (top first) shows at `comps`, `None` if nothing.
/// Follows overlayfs: the topmost entry decides; directories merge with lower directories until
/// an opaque directory or a non-directory; a whiteout hides what is below.
fn merged_kind(lowers_top_first: &[PathBuf], comps: &[OsString]) -> Option<Kind> {
    let mut active: Vec<PathBuf> = lowers_top_first.to_vec();
    let mut kind = None;
    for c in comps {
        let mut next = Vec::new();
        kind = None;
        for base in &active {
            let p = base.join(c);
            let Some(md) = lstat(&p) else { continue };
            match (kind, kind_of(&md)) {
                (None, Kind::Dir) => {
                    kind = Some(Kind::Dir);
                    let opaque = get_xattr(&p, OVERLAY_OPAQUE_XATTR).as_deref() == Some(b"y");
                    next.push(p);
                    if opaque {
                        break;
                    }
                }
                (Some(Kind::Dir), Kind::Dir) => {
                    let opaque = get_xattr(&p, OVERLAY_OPAQUE_XATTR).as_deref() == Some(b"y");
                    next.push(p);
                    if opaque {
                        break;
                    }
                }
                (None, Kind::Whiteout) => return None,
                (None, k) => return Some(k),
                // a non-directory below a directory ends the merge
                (Some(_), _) => break,
            }
        }
        kind?;
        active = next;
    }
    kind
}

fn get_xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let path = CString::new(p.as_os_str().as_bytes()).ok()?;
    let name = CString::new(name).ok()?;
    let mut buf = [0u8; 16];
    // SAFETY: both strings are NUL-terminated and live across the call; buf is valid for
    // buf.len() bytes.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return None;
    }
    buf.get(..n as usize).map(|b| b.to_vec())
}

fn set_xattr(p: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let path = CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let name = CString::new(name).map_err(io::Error::other)?;
    // SAFETY: both strings are NUL-terminated and live across the call; value is valid for
    // value.len() bytes. lsetxattr does not follow a final symlink.
    let r = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Split a tar entry name into normal components; refuse absolute names and `..`.
fn components(raw: &[u8], what: &str) -> Result<Vec<OsString>> {
    let shown = String::from_utf8_lossy(raw);
    if raw.first() == Some(&b'/') {
        return Err(ImageError::unsafe_entry(&shown, format!("absolute {what}")));
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => continue,
            b".." => {
                return Err(ImageError::unsafe_entry(
                    &shown,
                    format!("{what} contains `..`"),
                ))
            }
            _ => out.push(OsStr::from_bytes(c).to_os_string()),
        }
    }
    Ok(out)
}

struct Unpacker<'a> {
    root: &'a Path,
    lowers: &'a [PathBuf],
    opts: UnpackOptions,
    /// directories whose mode, owner and mtime are applied at the end (children change mtimes;
    /// a read-only mode would get in the way of the children)
    dirs: Vec<(PathBuf, u32, u64, u64, u64)>,
    size: u64,
    entries: u64,
}

impl Unpacker<'_> {
    /// Walk `comps` from the root, creating missing directories, refusing symlinks (of this layer
    /// or of the merged lower view) and non-directories on the way.
    fn parent_dir(&self, comps: &[OsString], shown: &str) -> Result<PathBuf> {
        let mut cur = self.root.to_path_buf();
        for (i, c) in comps.iter().enumerate() {
            cur.push(c);
            match lstat(&cur) {
                Some(md) if md.file_type().is_dir() => {}
                Some(md) if md.file_type().is_symlink() => {
                    return Err(ImageError::unsafe_entry(
                        shown,
                        "path goes through a symlink placed by an earlier entry",
                    ))
                }
                Some(_) => {
                    return Err(ImageError::unsafe_entry(
                        shown,
                        "a parent path component is not a directory",
                    ))
                }
                None => {
                    match merged_kind(self.lowers, &comps[..=i]) {
                        Some(Kind::Symlink) => {
                            return Err(ImageError::unsafe_entry(
                                shown,
                                "path goes through a symlink of a lower layer",
                            ))
                        }
                        Some(Kind::Other) => {
                            return Err(ImageError::unsafe_entry(
                                shown,
                                "a parent path component is not a directory in a lower layer",
                            ))
                        }
                        _ => {}
                    }
                    std::fs::create_dir(&cur)
                        .map_err(|e| ImageError::io("create directory", &cur, e))?;
                }
            }
        }
        Ok(cur)
    }

    /// An existing path of this layer, without following symlinks in its parents.
    fn existing(&self, comps: &[OsString], shown: &str) -> Result<PathBuf> {
        let mut cur = self.root.to_path_buf();
        let n = comps.len();
        for (i, c) in comps.iter().enumerate() {
            cur.push(c);
            let md = lstat(&cur).ok_or_else(|| {
                ImageError::unsafe_entry(shown, "hardlink target is not in this layer")
            })?;
            if i + 1 < n && !md.file_type().is_dir() {
                return Err(ImageError::unsafe_entry(
                    shown,
                    "hardlink target goes through a symlink or non-directory",
                ));
            }
        }
        Ok(cur)
    }

    fn clear(&self, path: &Path, keep_dir: bool) -> Result<()> {
        match lstat(path) {
            None => Ok(()),
            Some(md) if md.file_type().is_dir() => {
                if keep_dir {
                    Ok(())
                } else {
                    std::fs::remove_dir_all(path)
                        .map_err(|e| ImageError::io("remove directory", path, e))
                }
            }
            Some(_) => std::fs::remove_file(path).map_err(|e| ImageError::io("remove", path, e)),
        }
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<()> {
        self.entries += 1;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let comps = components(&raw, "path")?;
        let Some((name, parents)) = comps.split_last() else {
            // the root itself ("./"): keep its metadata
            if kind.is_dir() {
                let h = entry.header();
                let mode = h.mode().unwrap_or(0o755);
                let (uid, gid, mtime) = (
                    h.uid().unwrap_or(0),
                    h.gid().unwrap_or(0),
                    h.mtime().unwrap_or(0),
                );
                self.dirs
                    .push((self.root.to_path_buf(), mode, uid, gid, mtime));
            }
            return Ok(());
        };
        let name_bytes = name.as_bytes();

        // whiteouts
        if name_bytes == OPAQUE_MARKER.as_bytes() {
            let dir = self.parent_dir(parents, &shown)?;
            set_xattr(&dir, OVERLAY_OPAQUE_XATTR.as_bytes(), b"y")
                .map_err(|e| ImageError::io("mark opaque (needs CAP_SYS_ADMIN)", &dir, e))?;
            return Ok(());
        }
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if hidden.starts_with(WHITEOUT_PREFIX.as_bytes()) || hidden.is_empty() {
                // aufs metadata (.wh..wh.plnk, …): not part of the filesystem
                return Ok(());
            }
            if hidden == b"." || hidden == b".." || hidden.contains(&b'/') {
                return Err(ImageError::unsafe_entry(&shown, "whiteout of `.` or `..`"));
            }
            let dir = self.parent_dir(parents, &shown)?;
            let target = dir.join(OsStr::from_bytes(hidden));
            self.clear(&target, false)?;
            nix::sys::stat::mknod(&target, SFlag::S_IFCHR, Mode::empty(), 0).map_err(|e| {
                ImageError::io("create whiteout (needs CAP_MKNOD)", &target, e.into())
            })?;
            return Ok(());
        }

        let dir = self.parent_dir(parents, &shown)?;
        let path = dir.join(name);
        let header = entry.header().clone();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let uid = header.uid().unwrap_or(0);
        let gid = header.gid().unwrap_or(0);
        let mtime = header.mtime().unwrap_or(0);
        let xattrs = pax_xattrs(&mut entry);

        match kind {
            tar::EntryType::Directory => {
                self.clear(&path, true)?;
                if lstat(&path).is_none() {
                    std::fs::create_dir(&path)
                        .map_err(|e| ImageError::io("create directory", &path, e))?;
                }
                self.xattrs(&path, &xattrs)?;
                self.dirs.push((path, mode, uid, gid, mtime));
                return Ok(());
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.clear(&path, false)?;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(&path)
                    .map_err(|e| ImageError::io("create file", &path, e))?;
                let n = io::copy(&mut entry, &mut f)
                    .map_err(|e| ImageError::InvalidContent(format!("layer entry {shown}: {e}")))?;
                self.size += n;
                chown_result(
                    std::os::unix::fs::fchown(&f, Some(uid as u32), Some(gid as u32)),
                    &path,
                )?;
                f.set_permissions(std::fs::Permissions::from_mode(mode))
                    .map_err(|e| ImageError::io("chmod", &path, e))?;
                drop(f);
                self.xattrs(&path, &xattrs)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| ImageError::unsafe_entry(&shown, "symlink without target"))?
                    .into_owned();
                self.clear(&path, false)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path)
                    .map_err(|e| ImageError::io("create symlink", &path, e))?;
                chown_result(
                    std::os::unix::fs::lchown(&path, Some(uid as u32), Some(gid as u32)),
                    &path,
                )?;
                self.xattrs(&path, &xattrs)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| ImageError::unsafe_entry(&shown, "hardlink without target"))?
                    .into_owned();
                let tcomps = components(&target, "hardlink target")?;
                if tcomps.is_empty() {
                    return Err(ImageError::unsafe_entry(&shown, "hardlink to the root"));
                }
                let src = self.existing(&tcomps, &shown)?;
                if src == path {
                    return Ok(());
                }
                self.clear(&path, false)?;
                std::fs::hard_link(&src, &path)
                    .map_err(|e| ImageError::io("create hardlink", &path, e))?;
                // a hardlink shares the target's inode: no metadata of its own
                return Ok(());
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                if !self.opts.allow_device_nodes {
                    tracing::debug!(entry = %shown, "skipping device node");
                    return Ok(());
                }
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let sflag = if kind == tar::EntryType::Char {
                    SFlag::S_IFCHR
                } else {
                    SFlag::S_IFBLK
                };
                self.clear(&path, false)?;
                nix::sys::stat::mknod(
                    &path,
                    sflag,
                    Mode::from_bits_truncate(mode),
                    nix::sys::stat::makedev(major.into(), minor.into()),
                )
                .map_err(|e| ImageError::io("create device node", &path, e.into()))?;
                self.chown_chmod(&path, uid, gid, mode)?;
                self.xattrs(&path, &xattrs)?;
            }
            tar::EntryType::Fifo => {
                self.clear(&path, false)?;
                nix::unistd::mkfifo(&path, Mode::from_bits_truncate(mode))
                    .map_err(|e| ImageError::io("create fifo", &path, e.into()))?;
                self.chown_chmod(&path, uid, gid, mode)?;
                self.xattrs(&path, &xattrs)?;
            }
            other => {
                tracing::debug!(entry = %shown, kind = ?other, "skipping unsupported tar entry");
                return Ok(());
            }
        }
        set_mtime(&path, mtime)?;
        Ok(())
    }

    fn chown_chmod(&self, path: &Path, uid: u64, gid: u64, mode: u32) -> Result<()> {
        chown_result(
            std::os::unix::fs::lchown(path, Some(uid as u32), Some(gid as u32)),
            path,
        )?;
        // not a symlink (callers): chmod does not follow anything here
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| ImageError::io("chmod", path, e))
    }

    fn xattrs(&self, path: &Path, xattrs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        for (k, v) in xattrs {
            if k.starts_with(b"trusted.overlay.") {
                continue;
            }
            if let Err(e) = set_xattr(path, k, v) {
                // a filesystem without user/security xattrs, or SELinux labels we may not set
                let benign = matches!(
                    e.raw_os_error(),
                    Some(libc::ENOTSUP) | Some(libc::EPERM) | Some(libc::EACCES)
                );
                if !benign {
                    return Err(ImageError::io("set xattr", path, e));
                }
                tracing::debug!(path = %path.display(), error = %e, "xattr not kept");
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        // deepest first, so setting a parent's mtime comes after its children changed it
        self.dirs
            .sort_by_key(|(p, ..)| std::cmp::Reverse(p.components().count()));
        for (p, mode, uid, gid, mtime) in std::mem::take(&mut self.dirs) {
            chown_result(
                std::os::unix::fs::lchown(&p, Some(uid as u32), Some(gid as u32)),
                &p,
            )?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
                .map_err(|e| ImageError::io("chmod", &p, e))?;
            set_mtime(&p, mtime)?;
        }
        Ok(())
    }
}

/// Unprivileged (tests, rootless tools) a chown to another owner fails: keep going, the files
/// are then owned by the caller, as tar does for non-root users.
fn chown_result(r: io::Result<()>, path: &Path) -> Result<()> {
    match r {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && !nix::unistd::geteuid().is_root() => {
            Ok(())
        }
        r => r.map_err(|e| ImageError::io("chown", path, e)),
    }
}

fn set_mtime(path: &Path, mtime: u64) -> Result<()> {
    let t = TimeSpec::new(mtime.min(i64::MAX as u64) as i64, 0);
    nix::sys::stat::utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| ImageError::io("set mtime", path, e.into()))
}

fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(Some(exts)) = entry.pax_extensions() {
        for ext in exts.flatten() {
            if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                out.push((name.to_vec(), ext.value_bytes().to_vec()));
            }
        }
    }
    out
}

/// Unpack one layer (gzip, zstd or plain tar) into `dest`, an existing empty directory.
/// `lowers_top_first` are the already unpacked layers below it (for the symlink check).
/// On error `dest` holds a partial tree: the caller throws it away.
pub fn unpack_layer<R: Read>(
    blob: R,
    dest: &Path,
    lowers_top_first: &[PathBuf],
    opts: UnpackOptions,
) -> Result<UnpackStats> {
    let bad = |e: io::Error| ImageError::InvalidContent(format!("layer: {e}"));
    let reader = decompressor(BufReader::with_capacity(256 * 1024, blob)).map_err(bad)?;
    let mut archive = tar::Archive::new(HashingReader::new(reader));
    let mut u = Unpacker {
        root: dest,
        lowers: lowers_top_first,
        opts,
        dirs: Vec::new(),
        size: 0,
        entries: 0,
    };
    for entry in archive.entries().map_err(bad)? {
        let entry = entry.map_err(bad)?;
        u.entry(entry)?;
    }
    u.finish()?;
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(bad)?;
    let (diff_id, _) = rest.finish();
    Ok(UnpackStats {
        diff_id,
        size: u.size,
        entries: u.entries,
    })
}

/// Open `rel` inside `root` for reading, refusing names that escape it (used for archive import).
pub(crate) fn open_inside(root: &Path, rel: &str) -> Result<File> {
    let comps = components(rel.as_bytes(), "archive path")?;
    let mut p = root.to_path_buf();
    p.extend(comps);
    let canon_root = root
        .canonicalize()
        .map_err(|e| ImageError::io("resolve", root, e))?;
    let canon = p
        .canonicalize()
        .map_err(|e| ImageError::io("resolve", &p, e))?;
    if !canon.starts_with(&canon_root) {
        return Err(ImageError::unsafe_entry(
            rel,
            "archive path resolves outside the archive",
        ));
    }
    File::open(&canon).map_err(|e| ImageError::io("open", &canon, e))
}
