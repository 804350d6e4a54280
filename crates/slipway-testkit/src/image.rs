//! The test guest image: the kernel of Debian's `linux-image-cloud-amd64`,
//! its virtio-net modules and busybox-static in an initramfs, built once and
//! cached under the cargo target directory.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::process::run;

/// The guest's /init.
const INIT: &str = include_str!("guest/init.sh");
/// Shell helpers sourced before every test script.
const LIB: &str = include_str!("guest/lib.sh");
/// The busybox udhcpc hook used by the `dhcp` shell helper.
const UDHCPC: &str = include_str!("guest/udhcpc.sh");

/// Where the udhcpc hook lives inside the guest. Scripts that run udhcpc by
/// hand (instead of the `dhcp IFACE [PREFIX]` helper) pass it with `-s`; it
/// configures the interface and prints `SLIPWAY-RESULT ip=…`, `mask`,
/// `subnet`, `broadcast`, `router`, `dns`, `domain`, `search`, `hostname`,
/// `mtu`, `boot_file`, `siaddr`, `serverid`, `lease` and `dhcp=bound`, each
/// key prefixed with `$SLIPWAY_PREFIX` when that is set.
pub const UDHCPC_SCRIPT: &str = "/lib/slipway/udhcpc.sh";

/// NIC driver modules put into the initramfs, in the order /init loads them
/// (the image has no modules.dep, so dependencies come first). Debian's cloud
/// kernel has no e1000, so guests use virtio-net-pci.
pub const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
];

/// Host programs copied into the guest together with the shared libraries
/// `ldd` says they load, as (path, Debian package). busybox lacks them: its
/// `nc` has no UDP mode (`ncat -u` has) and there is no iperf3.
pub const HOST_PROGRAMS: &[(&str, &str)] =
    &[("/usr/bin/ncat", "ncat"), ("/usr/bin/iperf3", "iperf3")];

/// The metapackage that names the current cloud kernel package.
const KERNEL_METAPACKAGE: &str = "linux-image-cloud-amd64";
/// busybox-static's binary; the guest has no libc, so it must be static.
const BUSYBOX: &str = "/bin/busybox";

/// A built guest image: a kernel and a base initramfs (an uncompressed newc
/// cpio archive) that runs `/test.sh`, which each test appends.
#[derive(Clone, Debug)]
pub struct GuestImage {
    kernel: PathBuf,
    initrd: PathBuf,
    kernel_version: String,
}

/// The image this process already built or found, so tests in one binary do
/// not repeat the (cheap but not free) cache check under the file lock.
static IMAGE: Mutex<Option<GuestImage>> = Mutex::new(None);

impl GuestImage {
    /// Returns the cached image, building it first if needed (downloading the
    /// kernel package with `apt-get download` the first time). Safe to call
    /// from parallel tests and parallel test binaries: the build holds a
    /// file lock and publishes the finished image with one rename.
    pub fn get() -> Result<GuestImage> {
        let mut slot = IMAGE.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(image) = &*slot {
            return Ok(image.clone());
        }
        let image = build_cached(&cache_dir())?;
        *slot = Some(image.clone());
        Ok(image)
    }

    /// The kernel (`vmlinuz`).
    pub fn kernel(&self) -> &Path {
        &self.kernel
    }

    /// The base initramfs, without any `/test.sh`.
    pub fn initrd(&self) -> &Path {
        &self.initrd
    }

    /// The kernel release, e.g. `6.1.0-56-cloud-amd64`.
    pub fn kernel_version(&self) -> &str {
        &self.kernel_version
    }

    /// Writes to `dest` the base initramfs followed by a second cpio archive
    /// holding `script` as `/test.sh`; the kernel unpacks concatenated
    /// archives in order, so the base is never rebuilt per test.
    pub fn initrd_with_script(&self, script: &str, dest: &Path) -> Result<()> {
        fs::copy(&self.initrd, dest).map_err(|e| {
            Error::io(
                format!("copying {} to {}", self.initrd.display(), dest.display()),
                e,
            )
        })?;
        let write = || -> io::Result<()> {
            let mut file = OpenOptions::new().append(true).open(dest)?;
            // An uncompressed archive must start 4-byte aligned; newc archives
            // are padded to 4 already, this only guards against a base
            // written by something else.
            let len = file.metadata()?.len();
            let pad = (4 - len % 4) % 4;
            file.write_all(&[0u8; 3][..pad as usize])?;
            let mut archive = Vec::new();
            add_file(&mut archive, "test.sh", 0o100755, script.as_bytes())?;
            cpio::newc::trailer(&mut archive)?;
            file.write_all(&archive)
        };
        write().map_err(|e| Error::io(format!("appending /test.sh to {}", dest.display()), e))
    }
}

/// The directory that holds the cached guest: `slipway-guest/` in the cargo
/// target directory of the running test binary (found by walking up from the
/// executable to the directory holding cargo's `CACHEDIR.TAG`), else in
/// `$CARGO_TARGET_DIR`, else in the workspace's `target/`.
pub fn cache_dir() -> PathBuf {
    let from_exe = std::env::current_exe().ok().and_then(|exe| {
        exe.ancestors()
            .find(|dir| dir.join("CACHEDIR.TAG").is_file())
            .map(Path::to_path_buf)
    });
    let target = from_exe
        .or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        })
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("slipway-guest")
}

/// FNV-1a over everything that goes into the image besides the kernel
/// package, so a changed /init or module list gets a fresh cache entry.
fn content_hash() -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let programs: Vec<&str> = HOST_PROGRAMS.iter().map(|(path, _)| *path).collect();
    for part in [INIT, LIB, UDHCPC, &MODULES.join(" "), &programs.join(" ")] {
        for byte in part.bytes().chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |e| Error::io(context, e)
}

/// Returns the image in `cache`, building it under the lock if it is not
/// there yet.
fn build_cached(cache: &Path) -> Result<GuestImage> {
    let dir = cache.join(format!("image-{:016x}", content_hash()));
    if let Some(image) = load(&dir)? {
        return Ok(image);
    }
    fs::create_dir_all(cache).map_err(io_err(format!("creating {}", cache.display())))?;
    let lock_path = cache.join("lock");
    let lock =
        File::create(&lock_path).map_err(io_err(format!("opening {}", lock_path.display())))?;
    // SAFETY: flock on a descriptor we own; released when `lock` is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(Error::io(
            format!("locking {}", lock_path.display()),
            io::Error::last_os_error(),
        ));
    }
    // Another process may have finished the build while we waited.
    if let Some(image) = load(&dir)? {
        return Ok(image);
    }
    build(cache, &dir)?;
    load(&dir)?
        .ok_or_else(|| Error::Image(format!("{} missing right after building it", dir.display())))
}

/// The image in `dir`, if a finished one is there (it appears only by rename,
/// so existing means complete).
fn load(dir: &Path) -> Result<Option<GuestImage>> {
    let version_file = dir.join("kernel-version");
    match fs::read_to_string(&version_file) {
        Ok(version) => Ok(Some(GuestImage {
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.cpio"),
            kernel_version: version.trim().to_string(),
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("reading {}", version_file.display()), e)),
    }
}

/// Builds the image into a temporary directory inside `cache` and renames it
/// to `dest`.
fn build(cache: &Path, dest: &Path) -> Result<()> {
    check_static_busybox()?;
    let deb = kernel_deb(cache)?;
    let work = tempfile::Builder::new()
        .prefix("build-")
        .tempdir_in(cache)
        .map_err(io_err(format!(
            "creating a build directory in {}",
            cache.display()
        )))?;
    let root = work.path().join("pkg");
    run(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root),
        "dpkg",
    )?;

    let (vmlinuz, version) = find_kernel(&root)?;
    let module_root = root.join("lib/modules").join(&version).join("kernel");
    let mut modules = Vec::new();
    for name in MODULES {
        let path = find_file(&module_root, &format!("{name}.ko"))
            .map_err(io_err(format!("searching {}", module_root.display())))?
            .ok_or_else(|| {
                Error::Image(format!(
                    "{} has no {name}.ko under {} (compressed modules are not supported)",
                    deb.display(),
                    module_root.display()
                ))
            })?;
        modules.push((*name, path));
    }

    let host_files = host_program_files()?;

    let out = work.path().join("out");
    fs::create_dir(&out).map_err(io_err(format!("creating {}", out.display())))?;
    let initrd = base_initrd(&modules, &host_files)?;
    write_synced(&out.join("initrd.cpio"), &initrd)?;
    let kernel = fs::read(&vmlinuz).map_err(io_err(format!("reading {}", vmlinuz.display())))?;
    write_synced(&out.join("vmlinuz"), &kernel)?;
    write_synced(&out.join("kernel-version"), version.as_bytes())?;
    fs::rename(&out, dest).map_err(io_err(format!(
        "renaming {} to {}",
        out.display(),
        dest.display()
    )))
}

/// Writes `data` to `path` and flushes it to disk before the rename that
/// publishes it.
fn write_synced(path: &Path, data: &[u8]) -> Result<()> {
    let write = || -> io::Result<()> {
        let mut f = File::create(path)?;
        f.write_all(data)?;
        f.sync_all()
    };
    write().map_err(io_err(format!("writing {}", path.display())))
}

/// busybox must be the static build: the initramfs has no libc.
fn check_static_busybox() -> Result<()> {
    let missing = || Error::MissingTool {
        tool: BUSYBOX.to_string(),
        package: "busybox-static".to_string(),
    };
    let elf = fs::read(BUSYBOX).map_err(|_| missing())?;
    match elf_has_interpreter(&elf) {
        Some(false) => Ok(()),
        Some(true) => Err(Error::Image(format!(
            "{BUSYBOX} is dynamically linked; install the Debian package busybox-static (it replaces busybox)"
        ))),
        None => Err(Error::Image(format!("{BUSYBOX} is not a 64-bit little-endian ELF file"))),
    }
}

/// Whether a 64-bit little-endian ELF file asks for a dynamic loader
/// (has a PT_INTERP program header); None if it is not such a file.
fn elf_has_interpreter(elf: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?));
    let phoff = usize::try_from(u64::from_le_bytes(elf.get(0x20..0x28)?.try_into().ok()?)).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum {
        let at = phoff.checked_add(i.checked_mul(phentsize)?)?;
        let p_type = u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?);
        if p_type == PT_INTERP {
            return Some(true);
        }
    }
    Some(false)
}

/// The kernel package to use: the one already downloaded for the package
/// the metapackage currently names, else downloaded now. Offline, any cached
/// kernel package is used.
fn kernel_deb(cache: &Path) -> Result<PathBuf> {
    let debs = cache.join("debs");
    fs::create_dir_all(&debs).map_err(io_err(format!("creating {}", debs.display())))?;
    let package = match current_kernel_package() {
        Ok(package) => package,
        Err(e) => {
            return find_deb(&debs, "linux-image-")?.ok_or(e);
        }
    };
    if let Some(deb) = find_deb(&debs, &format!("{package}_"))? {
        return Ok(deb);
    }
    let download = tempfile::Builder::new()
        .prefix("download-")
        .tempdir_in(cache)
        .map_err(io_err(format!(
            "creating a download directory in {}",
            cache.display()
        )))?;
    run(
        Command::new("apt-get")
            .args(["download", "-q", &package])
            .current_dir(download.path()),
        "apt",
    )
    .map_err(|e| {
        Error::Image(format!(
            "could not download the guest kernel package {package} with `apt-get download` \
             (is the apt mirror reachable? try `apt-get update`): {e}"
        ))
    })?;
    let fetched = find_deb(download.path(), &format!("{package}_"))?.ok_or_else(|| {
        Error::Image(format!(
            "`apt-get download {package}` succeeded but left no .deb"
        ))
    })?;
    let name = fetched.file_name().unwrap_or_default();
    let dest = debs.join(name);
    fs::rename(&fetched, &dest).map_err(io_err(format!(
        "moving the kernel package to {}",
        dest.display()
    )))?;
    Ok(dest)
}

/// The kernel package the metapackage depends on (local apt metadata only).
fn current_kernel_package() -> Result<String> {
    let out = run(
        Command::new("apt-cache").args(["depends", KERNEL_METAPACKAGE]),
        "apt",
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_string)
        .ok_or_else(|| {
            Error::Image(format!(
                "`apt-cache depends {KERNEL_METAPACKAGE}` names no linux-image package \
                 (run `apt-get update`):\n{text}"
            ))
        })
}

/// A `.deb` in `dir` whose name starts with `prefix` (the last in name order).
fn find_deb(dir: &Path, prefix: &str) -> Result<Option<PathBuf>> {
    let entries = fs::read_dir(dir).map_err(io_err(format!("listing {}", dir.display())))?;
    let mut debs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".deb"))
        })
        .collect();
    debs.sort();
    Ok(debs.pop())
}

/// `boot/vmlinuz-<version>` in the unpacked package, and the version.
fn find_kernel(root: &Path) -> Result<(PathBuf, String)> {
    let boot = root.join("boot");
    let entries = fs::read_dir(&boot).map_err(io_err(format!("listing {}", boot.display())))?;
    for entry in entries {
        let path = entry
            .map_err(io_err(format!("listing {}", boot.display())))?
            .path();
        let version = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("vmlinuz-"))
            .map(str::to_string);
        if let Some(version) = version {
            return Ok((path, version));
        }
    }
    Err(Error::Image(format!("no vmlinuz-* in {}", boot.display())))
}

/// The first file named `name` below `dir`.
fn find_file(dir: &Path, name: &str) -> io::Result<Option<PathBuf>> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            if let Some(found) = find_file(&path, name)? {
                return Ok(Some(found));
            }
        } else if entry.file_name() == name {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// The files [`HOST_PROGRAMS`] need in the guest: each program, its dynamic
/// loader and its shared libraries, at the paths `ldd` names.
fn host_program_files() -> Result<BTreeSet<PathBuf>> {
    let mut files = BTreeSet::new();
    for (program, package) in HOST_PROGRAMS {
        if !Path::new(program).is_file() {
            return Err(Error::MissingTool {
                tool: program.to_string(),
                package: package.to_string(),
            });
        }
        let out = run(Command::new("ldd").arg(program), "libc-bin")?;
        files.insert(PathBuf::from(program));
        for path in ldd_paths(program, &String::from_utf8_lossy(&out.stdout))? {
            files.insert(path);
        }
    }
    Ok(files)
}

/// The file paths in `ldd` output (libraries and the loader; not the vDSO).
fn ldd_paths(program: &str, ldd: &str) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for line in ldd.lines().map(str::trim) {
        if line.contains("not found") {
            return Err(Error::Image(format!(
                "{program}: a shared library is missing: {line}"
            )));
        }
        let target = line.split_once("=> ").map_or(line, |(_, t)| t);
        let path = target.split(" (").next().unwrap_or_default().trim();
        if path.starts_with('/') {
            paths.push(PathBuf::from(path));
        }
    }
    Ok(paths)
}

/// Appends one regular file (or, with empty `data` and a directory mode, a
/// directory) to a newc archive.
fn add_file(archive: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]) -> io::Result<()> {
    let size = u32::try_from(data.len()).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{name} is over 4 GiB"))
    })?;
    let mut w = cpio::NewcBuilder::new(name).mode(mode).write(archive, size);
    w.write_all(data)?;
    w.finish()?;
    Ok(())
}

/// The base initramfs: busybox, /init, the helpers and the NIC modules.
fn base_initrd(modules: &[(&str, PathBuf)], host_files: &BTreeSet<PathBuf>) -> Result<Vec<u8>> {
    const DIR: u32 = 0o040755;
    const FILE: u32 = 0o100644;
    const EXEC: u32 = 0o100755;
    let busybox = fs::read(BUSYBOX).map_err(io_err(format!("reading {BUSYBOX}")))?;
    let init = INIT.replace("@MODULES@", &MODULES.join(" "));
    let mut module_data = Vec::new();
    for (name, path) in modules {
        let data = fs::read(path).map_err(io_err(format!("reading {}", path.display())))?;
        module_data.push((format!("lib/modules/{name}.ko"), data));
    }
    // Host files go to the same paths in the guest; fs::read follows the
    // library symlinks, so the guest gets plain files.
    let mut host_data = Vec::new();
    let mut host_dirs = BTreeSet::new();
    for path in host_files {
        let data = fs::read(path).map_err(io_err(format!("reading {}", path.display())))?;
        let name = path.to_string_lossy().trim_start_matches('/').to_string();
        for dir in Path::new(&name).ancestors().skip(1) {
            if !dir.as_os_str().is_empty() {
                host_dirs.insert(dir.to_string_lossy().into_owned());
            }
        }
        host_data.push((name, data));
    }

    let build = |a: &mut Vec<u8>| -> io::Result<()> {
        for dir in [
            "bin",
            "sbin",
            "usr",
            "usr/bin",
            "usr/sbin",
            "proc",
            "sys",
            "dev",
            "etc",
            "root",
            "run",
            "var",
            "lib",
            "lib/modules",
            "lib/slipway",
        ] {
            add_file(a, dir, DIR, &[])?;
        }
        add_file(a, "tmp", 0o041777, &[])?;
        // The kernel opens /dev/console for init's stdio before /init can
        // mount devtmpfs.
        cpio::NewcBuilder::new("dev/console")
            .mode(0o020600)
            .rdev_major(5)
            .rdev_minor(1)
            .write(&mut *a, 0)
            .finish()?;
        add_file(a, "bin/busybox", EXEC, &busybox)?;
        add_file(a, "init", EXEC, init.as_bytes())?;
        add_file(a, "lib/slipway/lib.sh", FILE, LIB.as_bytes())?;
        add_file(
            a,
            UDHCPC_SCRIPT.trim_start_matches('/'),
            EXEC,
            UDHCPC.as_bytes(),
        )?;
        for (name, data) in &module_data {
            add_file(a, name, FILE, data)?;
        }
        // BTreeSet order puts parents before children; re-adding a directory
        // of the fixed list above is harmless.
        for dir in &host_dirs {
            add_file(a, dir, DIR, &[])?;
        }
        for (name, data) in &host_data {
            add_file(a, name, EXEC, data)?;
        }
        cpio::newc::trailer(a)?;
        Ok(())
    };
    let mut archive = Vec::new();
    build(&mut archive).map_err(io_err("assembling the base initramfs"))?;
    Ok(archive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_is_parsed() {
        let out = "\tlinux-vdso.so.1 (0x00007f)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x1)\n\t/lib64/ld-linux-x86-64.so.2 (0x2)\n";
        assert_eq!(
            ldd_paths("p", out).unwrap(),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
        let err = ldd_paths("p", "\tlibx.so.1 => not found\n").unwrap_err();
        assert!(err.to_string().contains("libx.so.1"), "{err}");
    }

    #[test]
    fn system_busybox_is_static() {
        let elf = fs::read(BUSYBOX).expect("busybox-static is installed");
        assert_eq!(elf_has_interpreter(&elf), Some(false));
    }

    #[test]
    fn dynamic_programs_are_detected() {
        let elf = fs::read("/bin/sh").expect("/bin/sh exists");
        assert_eq!(elf_has_interpreter(&elf), Some(true));
        assert_eq!(elf_has_interpreter(b"#!/bin/sh\n"), None);
        assert_eq!(elf_has_interpreter(b"\x7fELF\x02\x01"), None);
    }

    #[test]
    fn appended_script_is_a_second_archive() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.cpio");
        let mut archive = Vec::new();
        add_file(&mut archive, "init", 0o100755, b"#!/bin/sh\n").unwrap();
        cpio::newc::trailer(&mut archive).unwrap();
        fs::write(&base, &archive).unwrap();
        let image = GuestImage {
            kernel: dir.path().join("vmlinuz"),
            initrd: base,
            kernel_version: "test".into(),
        };
        let dest = dir.path().join("with-script.cpio");
        image.initrd_with_script("echo hi\n", &dest).unwrap();

        let bytes = fs::read(&dest).unwrap();
        assert_eq!(&bytes[..archive.len()], &archive[..]);
        let second = &bytes[archive.len()..];
        let reader = cpio::NewcReader::new(second).unwrap();
        assert_eq!(reader.entry().name(), "test.sh");
        assert_eq!(reader.entry().mode(), 0o100755);
        let mut body = String::new();
        let mut reader = reader;
        io::Read::read_to_string(&mut reader, &mut body).unwrap();
        assert_eq!(body, "echo hi\n");
    }
}
