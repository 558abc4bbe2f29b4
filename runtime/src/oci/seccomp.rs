//! Seccomp for containers: which profile a CRI request selects (`RuntimeDefault`, `Unconfined`,
//! `Localhost`, or the deprecated `seccomp_profile_path` strings), berth's built-in default profile,
//! and loading a profile from a file on the node.
//!
//! The default profile follows the one Docker and containerd ship: an allow-list of the system calls
//! ordinary programs use, every other call failing with EPERM; `clone` only without namespace flags,
//! `personality` only with the usual personas, and the calls a granted capability makes legitimate
//! (mount with CAP_SYS_ADMIN, ptrace with CAP_SYS_PTRACE, ...) allowed only with that capability.
//! runc compiles it; names the host's libseccomp does not know for an architecture are skipped.

use std::path::Path;

use berth_proto::cri::SecurityProfile;
use berth_proto::cri::security_profile::ProfileType;
use oci_spec::runtime::LinuxSeccomp;
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// What a request asks for, once the new and deprecated fields are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Profile {
    RuntimeDefault,
    Unconfined,
    Localhost(String),
}

impl Profile {
    /// Parses a deprecated `seccomp_profile_path` string (also the config's `unset_seccomp_profile`).
    pub fn parse_legacy(s: &str) -> Result<Profile> {
        match s {
            "runtime/default" | "docker/default" => Ok(Profile::RuntimeDefault),
            "unconfined" => Ok(Profile::Unconfined),
            _ => match s.strip_prefix("localhost/") {
                Some(p) if p.starts_with('/') => Ok(Profile::Localhost(p.to_string())),
                _ => Err(Error::InvalidArgument(format!(
                    "seccomp profile {s:?}: expected runtime/default, docker/default, unconfined or localhost/<absolute path>"
                ))),
            },
        }
    }
}

/// The profile a container gets: the structured field wins over the deprecated path; when neither is
/// set, `unset` (the configured default) applies.
pub fn select(field: Option<&SecurityProfile>, legacy: &str, unset: &str) -> Result<Profile> {
    if let Some(p) = field {
        return match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Ok(Profile::RuntimeDefault),
            Ok(ProfileType::Unconfined) => Ok(Profile::Unconfined),
            Ok(ProfileType::Localhost) if p.localhost_ref.starts_with('/') => {
                Ok(Profile::Localhost(p.localhost_ref.clone()))
            }
            Ok(ProfileType::Localhost) => Err(Error::InvalidArgument(format!(
                "seccomp Localhost profile needs an absolute localhost_ref, got {:?}",
                p.localhost_ref
            ))),
            Err(_) => Err(Error::InvalidArgument(format!(
                "unknown seccomp profile type {}",
                p.profile_type
            ))),
        };
    }
    if !legacy.is_empty() {
        return Profile::parse_legacy(legacy);
    }
    if unset.is_empty() {
        return Ok(Profile::Unconfined);
    }
    Profile::parse_legacy(unset)
}

/// The OCI seccomp section for `profile` (None: unconfined). `caps` are the container's bounding
/// capabilities (`CAP_…` names), which widen the default profile as containerd's does.
pub fn build(profile: &Profile, caps: &[String]) -> Result<Option<LinuxSeccomp>> {
    let v = match profile {
        Profile::Unconfined => return Ok(None),
        Profile::RuntimeDefault => default_profile(caps),
        Profile::Localhost(path) => load(Path::new(path), caps)?,
    };
    serde_json::from_value(v)
        .map(Some)
        .map_err(|e| Error::InvalidArgument(format!("seccomp profile {profile:?}: {e}")))
}

/// Loads a profile from the node: OCI `LinuxSeccomp` JSON, or Docker's format (`archMap`, and
/// `includes`/`excludes` by capability or architecture per rule), converted to OCI.
fn load(path: &Path, caps: &[String]) -> Result<Value> {
    let text = std::fs::read(path)
        .map_err(|e| Error::InvalidArgument(format!("seccomp profile {}: cannot read it: {e}", path.display())))?;
    let mut v: Value = serde_json::from_slice(&text)
        .map_err(|e| Error::InvalidArgument(format!("seccomp profile {}: not JSON: {e}", path.display())))?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| Error::InvalidArgument(format!("seccomp profile {}: not a JSON object", path.display())))?;
    if let Some(map) = obj.remove("archMap") {
        let mut arches = vec![];
        for m in map.as_array().into_iter().flatten() {
            if let Some(a) = m.get("architecture") {
                arches.push(a.clone());
            }
            arches.extend(
                m.get("subArchitectures")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            );
        }
        obj.entry("architectures").or_insert(Value::Array(arches));
    }
    if let Some(Value::Array(rules)) = obj.get_mut("syscalls") {
        let arch = host_arch();
        rules.retain(|r| applies(r, caps, arch));
        for r in rules.iter_mut() {
            if let Some(o) = r.as_object_mut() {
                o.remove("includes");
                o.remove("excludes");
                o.remove("comment");
                if let Some(name) = o.remove("name") {
                    o.entry("names").or_insert(json!([name]));
                }
            }
        }
    }
    Ok(v)
}

/// Whether a Docker-format rule's `includes`/`excludes` admit it for these capabilities and this
/// architecture.
fn applies(rule: &Value, caps: &[String], arch: &str) -> bool {
    let list = |v: Option<&Value>, key: &str| -> Vec<String> {
        v.and_then(|v| v.get(key))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let (inc, exc) = (rule.get("includes"), rule.get("excludes"));
    let has_cap = |c: &String| caps.iter().any(|h| h.eq_ignore_ascii_case(c));
    let inc_caps = list(inc, "caps");
    let inc_arches = list(inc, "arches");
    (inc_caps.is_empty() || inc_caps.iter().all(has_cap))
        && (inc_arches.is_empty() || inc_arches.iter().any(|a| a == arch))
        && !list(exc, "caps").iter().any(has_cap)
        && !list(exc, "arches").iter().any(|a| a == arch)
}

/// This host's architecture as Docker's profiles name it.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "s390x" => "s390x",
        "powerpc64" => "ppc64le",
        _ => "",
    }
}

/// The seccomp architectures a container of this host may run: the native one and the ones its
/// kernel can also execute (32-bit x86 and x32 on x86_64, 32-bit ARM on aarch64).
fn architectures() -> Vec<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "aarch64" => vec!["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "x86" => vec!["SCMP_ARCH_X86"],
        "arm" => vec!["SCMP_ARCH_ARM"],
        "s390x" => vec!["SCMP_ARCH_S390X", "SCMP_ARCH_S390"],
        "powerpc64" => vec!["SCMP_ARCH_PPC64LE"],
        "riscv64" => vec!["SCMP_ARCH_RISCV64"],
        _ => vec![],
    }
}

/// System calls every container may make.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    // ptrace no longer bypasses seccomp since Linux 4.8; Docker and containerd allow it from there.
    "ptrace",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// Per-architecture extras.
const ALLOWED_X86_64: &[&str] = &["arch_prctl", "modify_ldt"];
const ALLOWED_ARM: &[&str] = &[
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "sync_file_range2",
    "breakpoint",
    "cacheflush",
    "set_tls",
];

/// Calls a capability makes legitimate, as containerd's default profile allows them.
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "name_to_handle_at",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    ("CAP_SYS_MODULE", &["delete_module", "init_module", "finit_module"]),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// The namespace flags of clone(2): CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET (and
/// CLONE_NEWTIME's bit is in clone3 only).
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;
const EPERM: u32 = 1;
const ENOSYS: u32 = 38;
/// AF_VSOCK: sockets to the hypervisor stay closed, as in Docker's profile.
const AF_VSOCK: u64 = 40;

/// berth's built-in default profile for a container with capabilities `caps`.
pub fn default_profile(caps: &[String]) -> Value {
    let has = |c: &str| caps.iter().any(|h| h == c);
    let mut names: Vec<&str> = ALLOWED.to_vec();
    match std::env::consts::ARCH {
        "x86_64" | "x86" => names.extend(ALLOWED_X86_64),
        "aarch64" | "arm" => names.extend(ALLOWED_ARM),
        _ => {}
    }
    for (cap, calls) in BY_CAPABILITY {
        if has(cap) {
            names.extend(*calls);
        }
    }
    names.sort_unstable();
    names.dedup();
    let mut rules = vec![json!({"names": names, "action": "SCMP_ACT_ALLOW"})];
    // The usual personas only (Linux, 32-bit, UNAME26 and their combinations; 0xffffffff queries).
    for persona in [0x0u64, 0x8, 0x20000, 0x20008, 0xffff_ffff] {
        rules.push(json!({
            "names": ["personality"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": persona, "op": "SCMP_CMP_EQ"}],
        }));
    }
    rules.push(json!({
        "names": ["socket"], "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_NE"}],
    }));
    if !has("CAP_SYS_ADMIN") {
        // clone without namespace flags (the flags are the first argument, the second on s390).
        let index = if std::env::consts::ARCH == "s390x" { 1 } else { 0 };
        rules.push(json!({
            "names": ["clone"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": index, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
        }));
        // clone3's flags are behind a pointer seccomp cannot read: ENOSYS makes libc fall back to clone.
        rules.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}));
    }
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": architectures(),
        "syscalls": rules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::cri::SecurityProfile;

    fn caps(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    fn allowed(v: &Value) -> Vec<String> {
        serde_json::from_value(v["syscalls"][0]["names"].clone()).unwrap()
    }

    #[test]
    fn selection() {
        let p = |t: ProfileType, r: &str| SecurityProfile {
            profile_type: t as i32,
            localhost_ref: r.into(),
        };
        assert_eq!(select(None, "", "").unwrap(), Profile::Unconfined);
        assert_eq!(select(None, "", "runtime/default").unwrap(), Profile::RuntimeDefault);
        assert_eq!(
            select(None, "unconfined", "runtime/default").unwrap(),
            Profile::Unconfined
        );
        assert_eq!(select(None, "docker/default", "").unwrap(), Profile::RuntimeDefault);
        assert_eq!(
            select(None, "localhost//etc/p.json", "").unwrap(),
            Profile::Localhost("/etc/p.json".into())
        );
        assert!(select(None, "localhost/relative.json", "").is_err());
        assert!(select(None, "whatever", "").is_err());
        let rd = p(ProfileType::RuntimeDefault, "");
        assert_eq!(select(Some(&rd), "unconfined", "").unwrap(), Profile::RuntimeDefault);
        let un = p(ProfileType::Unconfined, "");
        assert_eq!(select(Some(&un), "", "runtime/default").unwrap(), Profile::Unconfined);
        let lh = p(ProfileType::Localhost, "/x.json");
        assert_eq!(select(Some(&lh), "", "").unwrap(), Profile::Localhost("/x.json".into()));
        assert!(select(Some(&p(ProfileType::Localhost, "")), "", "").is_err());
    }

    #[test]
    fn default_profile_denies_the_dangerous_calls() {
        let v = default_profile(&caps(&["CAP_CHOWN", "CAP_SYS_CHROOT"]));
        let names = allowed(&v);
        for ok in ["read", "execve", "futex", "chroot", "setuid"] {
            assert!(names.iter().any(|n| n == ok), "{ok} allowed");
        }
        for denied in [
            "unshare",
            "mount",
            "keyctl",
            "add_key",
            "process_vm_readv",
            "bpf",
            "setns",
            "clone",
            "reboot",
        ] {
            assert!(!names.iter().any(|n| n == denied), "{denied} not allowed outright");
        }
        assert_eq!(v["defaultAction"], "SCMP_ACT_ERRNO");
        let clone = v["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["names"][0] == "clone")
            .unwrap();
        assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        let spec: LinuxSeccomp = serde_json::from_value(v).unwrap();
        assert!(spec.architectures().as_ref().is_some_and(|a| !a.is_empty()) || architectures().is_empty());
    }

    #[test]
    fn capabilities_widen_it() {
        let v = default_profile(&caps(&["CAP_SYS_ADMIN", "CAP_SYS_PTRACE"]));
        let names = allowed(&v);
        for ok in ["mount", "unshare", "setns", "clone", "ptrace"] {
            assert!(names.iter().any(|n| n == ok), "{ok} allowed with the capability");
        }
        assert!(
            !v["syscalls"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["names"][0] == "clone3")
        );
    }

    #[test]
    fn localhost_profiles() {
        let d = tempfile::tempdir().unwrap();
        let oci = d.path().join("oci.json");
        std::fs::write(
            &oci,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        let s = build(&Profile::Localhost(oci.display().to_string()), &[])
            .unwrap()
            .unwrap();
        assert_eq!(s.syscalls().as_ref().unwrap()[0].names(), &["mkdir".to_string()]);
        let docker = d.path().join("docker.json");
        std::fs::write(
            &docker,
            r#"{"defaultAction":"SCMP_ACT_ERRNO",
                "archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":["SCMP_ARCH_X86"]}],
                "syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"},
                            {"names":["mount"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMIN"]}},
                            {"name":"write","action":"SCMP_ACT_ALLOW","excludes":{"caps":["CAP_SYS_ADMIN"]}}]}"#,
        )
        .unwrap();
        let s = build(&Profile::Localhost(docker.display().to_string()), &caps(&["CAP_CHOWN"]))
            .unwrap()
            .unwrap();
        let names: Vec<_> = s
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .map(|r| r.names()[0].clone())
            .collect();
        assert_eq!(names, ["read", "write"]);
        assert_eq!(s.architectures().as_ref().unwrap().len(), 2);
        let err = build(&Profile::Localhost("/no/such/profile.json".into()), &[]).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        std::fs::write(&oci, "not json").unwrap();
        assert!(matches!(
            build(&Profile::Localhost(oci.display().to_string()), &[]),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(build(&Profile::Unconfined, &[]).unwrap(), None);
    }
}
