//! Root-only tests of executable allow-lists (Landlock) on a busybox rootfs. Not root / no
//! busybox: skipped with a message, or failed under CI=true.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use common::Env;
use kapsel_runtime::{LandlockSpec, Runtime, RuntimeError};

fn allow(exe: &[&str], writable: Option<&[&str]>) -> Option<LandlockSpec> {
    Some(LandlockSpec {
        allowed_executables: exe.iter().map(PathBuf::from).collect(),
        writable_paths: writable.map(|w| w.iter().map(PathBuf::from).collect()),
        best_effort: false,
    })
}

/// Give the rootfs its own copy of busybox as `/bin/httpd` (Landlock rules name files, and the
/// applets are hard links to one file), a web root and a CGI script run by `/bin/sh`.
fn web_rootfs(env: &Env) {
    let root = &env.rootfs;
    let _ = std::fs::remove_file(root.join("bin/httpd"));
    std::fs::copy("/bin/busybox", root.join("bin/httpd")).unwrap();
    std::fs::create_dir_all(root.join("www/cgi-bin")).unwrap();
    std::fs::write(root.join("www/index.html"), "served-by-httpd\n").unwrap();
    let cgi = root.join("www/cgi-bin/run");
    std::fs::write(
        &cgi,
        "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho spawned-a-shell\n",
    )
    .unwrap();
    std::fs::set_permissions(&cgi, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn only_listed_executables_run() {
    let Some(env) = Env::new() else { return };
    // The command is on the list, and so is one child; another child is not. (All three are
    // hard links to one busybox in the image, but on the container's overlay root each link is
    // its own inode, and Landlock rules name inodes.)
    let mut s = env.spec(
        "ll-exec",
        &[
            "/bin/sh",
            "-c",
            "/bin/true && echo true-ran; /bin/ls /; echo ls=$?",
        ],
    );
    s.landlock = allow(&["/bin/sh", "/bin/true"], None);
    let (st, out) = env.run(&s);
    assert_eq!(st.code, 0, "{out} {}", env.stderr("ll-exec"));
    assert!(out.contains("true-ran") && out.contains("ls=126"), "{out}");
    assert!(env.stderr("ll-exec").contains("Permission denied"));
    // Without a list, the same script runs ls.
    let s = env.spec(
        "ll-free",
        &[
            "/bin/sh",
            "-c",
            "/bin/true && echo true-ran; /bin/ls /; echo ls=$?",
        ],
    );
    let (_, out) = env.run(&s);
    assert!(out.contains("ls=0"), "{out}");

    // With its own copy, /bin/httpd is allowed and the busybox applets are not.
    web_rootfs(&env);
    let mut s = env.spec("ll-deny", &["/bin/httpd", "-h"]);
    s.landlock = allow(&["/bin/httpd"], None);
    let id = env.rt.create(&s).unwrap();
    env.rt.start(&id).unwrap();
    env.rt.wait(&id, Some(Duration::from_secs(10))).unwrap();
    env.rt.delete(&id).unwrap();
    let mut s = env.spec("ll-sh", &["/bin/sh", "-c", "echo should-not-run"]);
    s.landlock = allow(&["/bin/httpd"], None);
    let id = env.rt.create(&s).unwrap();
    let err = env.rt.start(&id).unwrap_err();
    env.rt.delete(&id).unwrap();
    assert!(
        err.to_string().contains("Permission denied") || err.to_string().contains("EACCES"),
        "{err}"
    );
    assert!(!env.stdout("ll-sh").contains("should-not-run"));
}

#[test]
fn httpd_serves_but_cannot_spawn_a_shell() {
    let Some(env) = Env::new() else { return };
    web_rootfs(&env);
    let sid = kapsel_runtime::SandboxId::new("kt-ll").unwrap();
    // Built from JSON so the test does not depend on every field of the spec.
    let sandbox: kapsel_runtime::SandboxSpec =
        serde_json::from_value(serde_json::json!({"id": "kt-ll", "hostname": "kt-ll"})).unwrap();
    env.rt.create_sandbox(&sandbox).unwrap();
    let mut web = env.spec(
        "ll-web",
        &[
            "/bin/httpd",
            "-f",
            "-v",
            "-p",
            "127.0.0.1:8080",
            "-h",
            "/www",
        ],
    );
    web.sandbox = Some(sid.clone());
    // The CGI script may run; its interpreter, /bin/sh, may not.
    web.landlock = allow(&["/bin/httpd", "/www/cgi-bin"], Some(&["/tmp"]));
    let idw = env.rt.create(&web).unwrap();
    env.rt.start(&idw).unwrap();
    // A client without an allow-list in the same pod network.
    let mut client = env.sh(
        "ll-client",
        "for i in $(seq 100); do wget -qO- http://127.0.0.1:8080/index.html && break; sleep 0.1; done; \
         echo; echo cgi:; wget -qO- http://127.0.0.1:8080/cgi-bin/run; echo cgi-rc=$?",
    );
    client.sandbox = Some(sid.clone());
    let (st, out) = env.run(&client);
    env.rt.delete(&idw).unwrap();
    // The same server without the allow-list runs the script (CGI works in this busybox).
    web.landlock = None;
    let idw = env.rt.create(&web).unwrap();
    env.rt.start(&idw).unwrap();
    let (_, control) = env.run(&client);
    env.rt.remove_sandbox(&sid).unwrap();
    assert!(control.contains("spawned-a-shell"), "control: {control}");
    assert_eq!(st.code, 0, "{out}");
    assert!(
        out.contains("served-by-httpd"),
        "the container serves: {out}"
    );
    assert!(
        !out.contains("spawned-a-shell"),
        "httpd spawned /bin/sh: {out}"
    );
    assert!(out.contains("cgi-rc=1"), "the CGI request fails: {out}");
}

#[test]
fn writable_paths_limit_writes() {
    let Some(env) = Env::new() else { return };
    let mut s = env.sh(
        "ll-write",
        "echo ok > /tmp/a && echo tmp-ok; echo x > /root/b || echo root-denied; \
         mkdir /var/d || echo mkdir-denied; echo quiet > /dev/null && echo devnull-ok",
    );
    s.landlock = allow(&["/bin"], Some(&["/tmp"]));
    let (st, out) = env.run(&s);
    assert_eq!(st.code, 0, "{out}");
    for want in ["tmp-ok", "root-denied", "mkdir-denied", "devnull-ok"] {
        assert!(out.contains(want), "{want}: {out}");
    }
    assert!(env.stderr("ll-write").contains("Permission denied"));
}

#[test]
fn bad_landlock_specs_are_refused_before_anything_starts() {
    let Some(env) = Env::new() else { return };
    let mut s = env.spec("ll-bad", &["/bin/true"]);
    s.landlock = allow(&["bin/true"], None);
    let err = env.rt.create(&s).unwrap_err();
    assert!(matches!(err, RuntimeError::InvalidSpec(_)), "{err}");
    assert!(env.rt.list().unwrap().is_empty());
    // This kernel has Landlock (ABI 7 here); CI must have it for the allow-list tests to mean
    // anything.
    assert!(
        kapsel_runtime::landlock::kernel_abi().is_some(),
        "the kernel has no Landlock"
    );
}
