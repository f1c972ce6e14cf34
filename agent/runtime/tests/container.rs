//! Root-only tests of the real runtime on a busybox rootfs. Not root / no busybox: skipped with a
//! message, or failed under CI=true.

mod common;

use std::time::Duration;

use common::Env;
use kapsel_runtime::Runtime;

#[test]
fn pid1_is_the_command_and_no_host_process_is_visible() {
    let Some(env) = Env::new() else { return };
    let (st, out) = env.run(&env.sh(
        "c",
        "echo pid=$$; echo cmd=$(tr '\\0' ' ' < /proc/1/cmdline); ls -d /proc/[0-9]* | wc -l",
    ));
    assert_eq!(st.code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "pid=1");
    assert!(lines[1].starts_with("cmd=/bin/sh -c echo pid=$$;"), "{}", lines[1]);
    // sh, the subshell pipeline: a handful at most, never the host's hundreds
    let n: usize = lines[2].trim().parse().unwrap();
    assert!(n <= 4, "{n} processes visible");
}
