//! What a new user sees: the demo's output, plain logs in files, colours on a terminal,
//! and commands printed so that they run as printed.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};

use crate::common::Setup;
use opter_visma_sync::sandbox::bundled_customers;

const BIN: &str = env!("CARGO_BIN_EXE_opter-visma-sync");

/// Runs the demo in `dir` with stdout and stderr in one stream, as a terminal shows them.
fn demo_output(dir: &std::path::Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("'{BIN}' demo --dir '{}' 2>&1", dir.display()))
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{text}");
    text
}

/// The customers a step's table lists as rejected, one entry per line.
fn rejected_lines(step: &str) -> Vec<&str> {
    step.lines()
        .skip_while(|l| !l.starts_with("rejected"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .collect()
}

#[test]
fn the_demo_shows_each_rejection_once_per_step_after_its_heading() {
    let dir = tempfile::tempdir().unwrap();
    let text = demo_output(dir.path());
    let mut steps = text.split("\n== ");
    let before_first = steps.next().unwrap();
    let steps: Vec<&str> = steps.collect();
    assert_eq!(steps.len(), 3, "{text}");
    let first = rejected_lines(steps[0]);
    assert!(
        !first.is_empty(),
        "the bundled customers include rejected ones:\n{text}"
    );
    let codes: Vec<&str> = first
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    for code in &codes {
        assert!(
            !before_first.contains(code),
            "{code} appears before the first heading:\n{before_first}"
        );
    }
    for step in &steps {
        for code in &codes {
            let times = step.matches(&format!("  {code} ")).count();
            assert_eq!(times, 1, "{code} is shown {times} times in:\n{step}");
        }
        assert!(!step.contains("WARN"), "a warning in the demo:\n{step}");
    }
}

#[test]
fn the_printed_explore_command_runs_as_printed_from_the_project_folder() {
    let dir = tempfile::tempdir().unwrap();
    let text = demo_output(dir.path());
    let command = text
        .lines()
        .find_map(|l| l.strip_prefix("explore it: "))
        .unwrap_or_else(|| panic!("no command to explore with:\n{text}"));
    let out = Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("OPTER_VISMA_SYNC_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "`{command}` failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The demo's three runs are listed, each finished.
    let runs = stdout
        .lines()
        .filter(|l| l.trim_end().ends_with(" yes"))
        .count();
    assert_eq!(runs, 3, "{stdout}");
}

/// A pseudo-terminal: the child gets the terminal side as stderr, the test reads the
/// other side.
fn pty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut terminal) = (0, 0);
    let made = unsafe {
        libc::openpty(
            &mut master,
            &mut terminal,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(made, 0, "openpty: {}", std::io::Error::last_os_error());
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(terminal)) }
}

/// What the child writes to stderr when stderr is a terminal.
fn stderr_on_a_terminal(mut command: Command) -> Vec<u8> {
    let (master, terminal) = pty();
    command.stdout(Stdio::null()).stderr(Stdio::from(terminal));
    let mut child = command.spawn().unwrap();
    // The command holds the terminal side now; ours is closed with the `Command`.
    drop(command);
    let reading = std::thread::spawn(move || {
        let mut file = std::fs::File::from(master);
        let mut bytes = Vec::new();
        // Ends with EIO once the child has closed the terminal side.
        let _ = file.read_to_end(&mut bytes);
        bytes
    });
    child.wait().unwrap();
    reading.join().unwrap()
}

/// An SGR escape (`ESC [ ... m`): a colour or style.
fn has_colour(bytes: &[u8]) -> bool {
    bytes.windows(2).enumerate().any(|(i, w)| {
        w == b"\x1b[" && {
            let rest = &bytes[i + 2..];
            let end = rest
                .iter()
                .position(|b| !(b.is_ascii_digit() || *b == b';'));
            end.is_some_and(|e| rest[e] == b'm')
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_plain_in_a_file_and_coloured_on_a_terminal_unless_no_color() {
    let setup = Setup::new(bundled_customers()[..5].to_vec()).await;
    // A file (as `2>sync.log` makes it).
    let log = setup.dir.path().join("sync.log");
    let file = std::fs::File::create(&log).unwrap();
    let status = setup
        .command(&["sync", "--json"])
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(file)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let written = std::fs::read(&log).unwrap();
    assert!(!written.is_empty(), "RUST_LOG=debug logs something");
    assert!(
        !written.contains(&0x1b),
        "an ESC byte in a log file:\n{}",
        String::from_utf8_lossy(&written)
    );

    let mut coloured = setup.command(&["sync", "--json"]);
    coloured.env_remove("NO_COLOR");
    let shown = stderr_on_a_terminal(coloured);
    assert!(
        has_colour(&shown),
        "no colour on a terminal:\n{}",
        String::from_utf8_lossy(&shown)
    );

    let mut plain = setup.command(&["sync", "--json"]);
    plain.env("NO_COLOR", "1");
    let shown = stderr_on_a_terminal(plain);
    assert!(!shown.is_empty(), "RUST_LOG=debug logs something");
    assert!(
        !has_colour(&shown),
        "colour despite NO_COLOR:\n{}",
        String::from_utf8_lossy(&shown)
    );
}
