//! Which kernel modules the guest loads, in which order, from the kernel package's
//! `modules.dep` (written by `depmod -b`: Debian ships none, its postinst runs depmod).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, bail};

/// What the guest needs that Debian's generic kernels build as modules: virtio PCI (a
/// module on 6.1, built in on 6.12), the 9p transport and filesystem for the host root,
/// and sock_diag for TCP and UDP (sockerr's holder lookup). Names as the kernel spells
/// them (`-` and `_` are the same to it).
pub const GUEST_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "tcp_diag", "udp_diag"];

/// And on arm64: the `virt` board has one serial port (the console), so the status
/// channel is a virtio-serial port (virtio_console).
pub fn guest_modules(arch: crate::arch::Arch) -> Vec<&'static str> {
    let mut modules = GUEST_MODULES.to_vec();
    if arch == crate::arch::Arch::Arm64 {
        modules.push("virtio_console");
    }
    modules
}

/// A module file, relative to `lib/modules/<release>/`.
pub type ModulePath = String;

/// `modules.dep`: module path -> the paths it needs.
#[derive(Debug, Default)]
pub struct ModuleIndex {
    deps: BTreeMap<ModulePath, Vec<ModulePath>>,
    by_name: BTreeMap<String, ModulePath>,
    builtin: BTreeSet<String>,
}

/// `kernel/fs/9p/9p.ko.xz` -> `9p`; `kernel/net/ipv4/tcp_diag.ko` -> `tcp_diag`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

impl ModuleIndex {
    /// `modules_dep` lines read `path: dep dep ...`; `modules_builtin` lists a path per
    /// line of what is compiled into the kernel.
    pub fn parse(modules_dep: &str, modules_builtin: &str) -> Self {
        let mut index = Self::default();
        for line in modules_dep.lines() {
            let Some((path, deps)) = line.split_once(':') else { continue };
            let path = path.trim().to_string();
            index.by_name.insert(module_name(&path), path.clone());
            index.deps.insert(path, deps.split_whitespace().map(str::to_string).collect());
        }
        index.builtin = modules_builtin.lines().filter(|l| !l.trim().is_empty()).map(module_name).collect();
        index
    }

    /// The module files to load for `wanted`, each after its dependencies; built-in
    /// modules need nothing.
    pub fn load_order(&self, wanted: &[&str]) -> Result<Vec<ModulePath>> {
        let mut order = Vec::new();
        for name in wanted {
            let name = name.replace('-', "_");
            match self.by_name.get(&name) {
                Some(path) => self.visit(path, &mut order, &mut Vec::new())?,
                None if self.builtin.contains(&name) => {}
                None => bail!(
                    "the kernel has no module {name} and does not build it in: the VM needs it \
                     (virtio, 9p and sock_diag); use a Debian generic kernel (linux-image-*-amd64 or -arm64)"
                ),
            }
        }
        Ok(order)
    }

    fn visit(&self, path: &str, order: &mut Vec<ModulePath>, stack: &mut Vec<String>) -> Result<()> {
        if order.iter().any(|done| done == path) {
            return Ok(());
        }
        if stack.iter().any(|seen| seen == path) {
            bail!("modules.dep has a dependency cycle through {path}");
        }
        let Some(deps) = self.deps.get(path) else {
            bail!("modules.dep names {path} as a dependency but has no line for it");
        };
        stack.push(path.to_string());
        for dep in deps {
            self.visit(dep, order, stack)?;
        }
        stack.pop();
        order.push(path.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines of Debian 6.1's modules.dep (after depmod).
    const DEP_6_1: &str = "\
kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/fs/netfs/netfs.ko:
kernel/net/9p/9pnet.ko:
kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/net/ipv4/inet_diag.ko:
kernel/net/ipv4/tcp_diag.ko: kernel/net/ipv4/inet_diag.ko
kernel/net/ipv4/udp_diag.ko: kernel/net/ipv4/inet_diag.ko
";

    fn position(order: &[String], name: &str) -> usize {
        order.iter().position(|p| module_name(p) == name).unwrap_or_else(|| panic!("{name} not in {order:?}"))
    }

    #[test]
    fn names_drop_directories_and_suffixes() {
        assert_eq!(module_name("kernel/fs/9p/9p.ko.xz"), "9p");
        assert_eq!(module_name("kernel/net/ipv4/tcp_diag.ko"), "tcp_diag");
        assert_eq!(module_name("kernel/drivers/virtio/virtio-pci.ko.zst"), "virtio_pci");
    }

    #[test]
    fn dependencies_come_first_and_once() {
        let index = ModuleIndex::parse(DEP_6_1, "kernel/net/ipv6/ipv6.ko\n");
        let order = index.load_order(GUEST_MODULES).unwrap();
        assert_eq!(order.len(), 13, "{order:?}");
        let unique: BTreeSet<_> = order.iter().collect();
        assert_eq!(unique.len(), order.len(), "{order:?}");
        assert!(position(&order, "virtio_ring") < position(&order, "virtio"));
        assert!(position(&order, "virtio") < position(&order, "virtio_pci"));
        assert!(position(&order, "netfs") < position(&order, "fscache"));
        assert!(position(&order, "fscache") < position(&order, "9p"));
        assert!(position(&order, "9pnet") < position(&order, "9pnet_virtio"));
        assert!(position(&order, "inet_diag") < position(&order, "udp_diag"));
    }

    #[test]
    fn built_in_modules_are_skipped_and_missing_ones_named() {
        let dep = "kernel/fs/9p/9p.ko.xz:\n";
        let index = ModuleIndex::parse(dep, "kernel/drivers/virtio/virtio_pci.ko\n");
        assert_eq!(index.load_order(&["virtio_pci", "9p"]).unwrap(), ["kernel/fs/9p/9p.ko.xz"]);
        let err = index.load_order(&["tcp_diag"]).unwrap_err().to_string();
        assert!(err.contains("no module tcp_diag"), "{err}");
    }

    #[test]
    fn broken_indexes_are_errors_not_loops() {
        let cycle = "a.ko: b.ko\nb.ko: a.ko\n";
        let err = ModuleIndex::parse(cycle, "").load_order(&["a"]).unwrap_err().to_string();
        assert!(err.contains("cycle"), "{err}");
        let dangling = "a.ko: c.ko\n";
        let err = ModuleIndex::parse(dangling, "").load_order(&["a"]).unwrap_err().to_string();
        assert!(err.contains("no line for it"), "{err}");
    }
}
