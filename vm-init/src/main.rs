//! PID 1 of the test VMs, built static (musl) by `cargo xtask vm-test` and packed into
//! the initramfs with the kernel modules it loads and the plan it follows.
//!
//! It loads the modules (virtio, 9p, sock_diag), mounts the host root read-only over 9p,
//! mounts proc, sys, devtmpfs, tracefs, debugfs, bpffs, cgroup2 and tmpfs where the tests
//! need them, binds the plan's directories (an arm64 guest's own /usr), changes root into
//! the host's, brings lo up, runs the plan's programs one by one with their output on the
//! console, reports each exit status on the status port and
//! powers off. Modelled on aya's test-distro init; a Rust init rather than a busybox
//! script so that every failing step is reported on the status port with its errno, and
//! so that the VM needs nothing from a package beyond the kernel.
#![allow(unused_crate_dependencies, reason = "a binary sees every dependency of its package")]

use std::{
    ffi::CString,
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::{
        fd::{AsFd, AsRawFd},
        unix::process::ExitStatusExt,
    },
    path::Path,
    process::Command,
};

use nix::{
    kmod::{ModuleInitFlags, finit_module},
    mount::{MsFlags, mount},
    sys::reboot::{RebootMode, reboot},
    unistd::{chdir, chroot},
};
use thiserror::Error;
use vm_init::{HOST_ROOT_MOUNT, MODULES_DIR, PLAN_PATH, Plan, STATUS_DEVICE, STATUS_PORT_NAME, Status};

/// cache=loose: nothing on the host changes under a test run, and it saves a 9p round
/// trip (slow under TCG) per stat and read.
const NINEP_OPTIONS: &str = "trans=virtio,version=9p2000.L,msize=512000,cache=loose";

/// finit_module(2) flag: the kernel decompresses the module itself (Linux 6.4+ with
/// CONFIG_MODULE_DECOMPRESS; Debian's 6.12 ships `.ko.xz` and has it).
const MODULE_INIT_COMPRESSED_FILE: libc::c_uint = 4;

#[derive(Debug, Error)]
enum InitError {
    #[error("{step}: {source}")]
    Io {
        step: String,
        #[source]
        source: io::Error,
    },
    #[error("{step}: {source}")]
    Sys {
        step: String,
        #[source]
        source: nix::Error,
    },
    #[error("{PLAN_PATH} is not a plan: {0}")]
    Plan(#[source] serde_json::Error),
}

impl InitError {
    fn step(&self) -> String {
        match self {
            Self::Io { step, .. } | Self::Sys { step, .. } => step.clone(),
            Self::Plan(_) => "read plan".into(),
        }
    }
}

fn io_step(step: impl Into<String>) -> impl FnOnce(io::Error) -> InitError {
    let step = step.into();
    move |source| InitError::Io { step, source }
}

fn sys_step(step: impl Into<String>) -> impl FnOnce(nix::Error) -> InitError {
    let step = step.into();
    move |source| InitError::Sys { step, source }
}

fn main() {
    // The console (ttyS0) is stdout/stderr: what the host shows while the tests run.
    if let Err(error) = mount_fs("devtmpfs", "/dev", "devtmpfs", MsFlags::empty(), None) {
        eprintln!("vm-init: {error}");
    }
    // On arm64 the port appears only once set_up() has loaded virtio_console: looked for
    // again at each report until found.
    let mut status_port = open_status_port();
    let mut report = |status: Status| {
        if status_port.is_none() {
            status_port = open_status_port();
        }
        if status_port.is_none() {
            eprintln!(
                "vm-init: no status port ({STATUS_DEVICE} or virtio port {STATUS_PORT_NAME}): {status:?}"
            );
        }
        if let Some(port) = status_port.as_mut() {
            let _ = port.write_all(status.to_line().as_bytes());
            let _ = port.flush();
        }
    };
    match set_up() {
        Ok(plan) => {
            report(Status::Ready { kernel: kernel_release() });
            for run in &plan.runs {
                let (code, signal) = execute(&plan, run);
                report(Status::Finished { name: run.name.clone(), code, signal });
            }
            report(Status::Done);
        }
        Err(error) => {
            eprintln!("vm-init: {error}");
            report(Status::SetupFailed { step: error.step(), error: error.to_string() });
        }
    }
    nix::unistd::sync();
    // PID 1 must not exit (the kernel would panic); power off, and if even that fails,
    // the host's time limit ends the VM.
    let _ = reboot(RebootMode::RB_POWER_OFF);
    loop {
        std::thread::park();
    }
}

/// The second UART on x86-64 (qemu's second `-serial`); elsewhere (arm64's `virt` board
/// has one UART, the console) the virtio-serial port named [`STATUS_PORT_NAME`], which
/// exists once virtio_console is loaded and sysfs mounted.
fn open_status_port() -> Option<File> {
    let open = |path: &Path| OpenOptions::new().write(true).open(path).ok();
    if cfg!(target_arch = "x86_64") {
        return open(Path::new(STATUS_DEVICE));
    }
    let ports = fs::read_dir("/sys/class/virtio-ports").ok()?;
    ports.flatten().find_map(|port| {
        let name = fs::read_to_string(port.path().join("name")).unwrap_or_default();
        (name.trim() == STATUS_PORT_NAME).then(|| open(&Path::new("/dev").join(port.file_name())))?
    })
}

fn set_up() -> Result<Plan, InitError> {
    mount_fs("proc", "/proc", "proc", MsFlags::empty(), None)?;
    mount_fs("sysfs", "/sys", "sysfs", MsFlags::empty(), None)?;
    let plan = fs::read(PLAN_PATH).map_err(io_step(format!("read {PLAN_PATH}")))?;
    let plan: Plan = serde_json::from_slice(&plan).map_err(InitError::Plan)?;
    for module in &plan.modules {
        load_module(&Path::new(MODULES_DIR).join(module))?;
    }
    mount_fs(&plan.root_tag, HOST_ROOT_MOUNT, "9p", MsFlags::MS_RDONLY, Some(NINEP_OPTIONS))?;
    for fs in ["dev", "proc", "sys"] {
        let target = format!("{HOST_ROOT_MOUNT}/{fs}");
        mount(Some(format!("/{fs}").as_str()), target.as_str(), None::<&str>, MsFlags::MS_MOVE, None::<&str>)
            .map_err(sys_step(format!("move /{fs} to {target}")))?;
    }
    let host = |path: &str| format!("{HOST_ROOT_MOUNT}{path}");
    // The host root is read-only: everything the tests write goes to these.
    for dir in vm_init::GUEST_TMPFS {
        mount_fs("tmpfs", &host(dir), "tmpfs", MsFlags::empty(), None)?;
    }
    for (source, target, fstype) in [
        ("tracefs", "/sys/kernel/tracing", "tracefs"),
        ("debugfs", "/sys/kernel/debug", "debugfs"),
        ("bpffs", "/sys/fs/bpf", "bpf"),
        ("cgroup2", "/sys/fs/cgroup", "cgroup2"),
    ] {
        mount_fs(source, &host(target), fstype, MsFlags::empty(), None)?;
    }
    for share in &plan.shares {
        let target = host(&share.path);
        fs::create_dir_all(&target).map_err(io_step(format!("create {target}")))?;
        mount_fs(&share.tag, &target, "9p", MsFlags::MS_RDONLY, Some(NINEP_OPTIONS))?;
    }
    for bind in &plan.binds {
        let (source, target) = (host(&bind.source), host(&bind.target));
        mount(Some(source.as_str()), target.as_str(), None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(sys_step(format!("bind {} over {}", bind.source, bind.target)))?;
    }
    chroot(HOST_ROOT_MOUNT).map_err(sys_step("chroot into the host root"))?;
    chdir(plan.cwd.as_str()).map_err(sys_step(format!("chdir {}", plan.cwd)))?;
    bring_loopback_up().map_err(io_step("bring lo up"))?;
    Ok(plan)
}

fn mount_fs(
    source: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), InitError> {
    mount(Some(source), target, Some(fstype), flags, data)
        .map_err(sys_step(format!("mount {fstype} on {target}")))
}

fn load_module(path: &Path) -> Result<(), InitError> {
    let file = File::open(path).map_err(io_step(format!("open {}", path.display())))?;
    let compressed = path.extension().is_some_and(|ext| ext == "xz" || ext == "zst" || ext == "gz");
    let flags = if compressed {
        ModuleInitFlags::from_bits_retain(MODULE_INIT_COMPRESSED_FILE)
    } else {
        ModuleInitFlags::empty()
    };
    match finit_module(file.as_fd(), &CString::default(), flags) {
        // Built into this kernel after all, or loaded as another module's dependency.
        Ok(()) | Err(nix::Error::EEXIST) => Ok(()),
        Err(source) => Err(InitError::Sys { step: format!("load module {}", path.display()), source }),
    }
}

/// Runs one program to its end; (exit code, signal).
fn execute(plan: &Plan, run: &vm_init::Run) -> (Option<i32>, Option<i32>) {
    let Some((program, args)) = run.argv.split_first() else {
        eprintln!("vm-init: run {} has no program", run.name);
        return (Some(127), None);
    };
    eprintln!("vm-init: running {}", run.argv.join(" "));
    let mut command = Command::new(program);
    command.args(args).env_clear().envs(plan.env.iter().map(|(k, v)| (k, v)));
    match command.status() {
        Ok(status) => (status.code(), status.signal()),
        Err(error) => {
            eprintln!("vm-init: cannot start {program}: {error}");
            (Some(127), None)
        }
    }
}

fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|release| release.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// SIOCSIFFLAGS IFF_UP on lo, as `ip link set lo up` does.
fn bring_loopback_up() -> io::Result<()> {
    // Any socket carries the interface ioctls; the wildcard address binds with lo down.
    let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write an ifreq we own, on a socket we own.
    unsafe {
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut request) < 0 {
            return Err(io::Error::last_os_error());
        }
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS as _, &request) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
