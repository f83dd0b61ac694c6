//! Slurm as the experiment graph's launcher (`LAUNCHER=slurm`), on a real single-node cluster
//! that the test starts on this machine from Debian's `slurm-wlm` and `munge` (installed by
//! `make setup-slurm`): munged, slurmctld and slurmd, with a generated `slurm.conf` in a
//! temporary directory, on loopback only. The perturbation of the built-in model runs as a job
//! array of 3 shards; one task is cancelled while it runs, the graph fails naming it, the rerun
//! resubmits that shard alone (it resumes from its finished units), and the merged G, its
//! standard errors and index.json are those of the single-process run, byte for byte. The
//! daemons are stopped by PID when the test ends, also when it fails. A machine that cannot run
//! them fails the test, saying why.
//!
//! Also here, without a cluster: `perturb --shard slurm` takes K/N from the job array's
//! environment, and refuses outside an array.

use clado_tests::{bin, run_with_env, workspace_root};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The shards of the cluster run: more than the node's 2 CPUs, so one waits for a free CPU.
const SHARDS: usize = 3;
/// Few samples and two options keep each shard to seconds with debug binaries.
const SAMPLES: &str = "16";
const OPTIONS: &str = "w2a8,w8a8";
/// How long the cluster may take to come up, and a stage to finish, before the test gives up.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STAGE_TIMEOUT: Duration = Duration::from_secs(600);

fn output(cmd: &mut Command) -> Output {
    let name = format!("{cmd:?}");
    cmd.output().unwrap_or_else(|e| panic!("cannot run {name}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on loopback")
        .port()
}

/// The numeric id of `user` (`id -u`) or of its group (`id -g`).
fn id_of(flag: &str, user: &str) -> u32 {
    let out = output(Command::new("id").args([flag, user]));
    assert!(
        out.status.success(),
        "no user {user}: Debian's munge package creates it (make setup-slurm)"
    );
    text(&out.stdout).trim().parse().expect("a numeric id")
}

/// A single-node Slurm cluster; dropping it cancels its jobs and stops its daemons by PID.
struct Cluster {
    dir: tempfile::TempDir,
    daemons: Vec<(&'static str, Child)>,
}

impl Cluster {
    fn conf(&self) -> PathBuf {
        self.dir.path().join("slurm.conf")
    }

    /// A Slurm client command talking to this cluster.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("SLURM_CONF", self.conf());
        cmd
    }

    fn log_tails(&self) -> String {
        ["munged.log", "slurmctld.log", "slurmd.log"]
            .iter()
            .map(|name| {
                let log = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                format!("--- {name}:\n{}", lines[lines.len().saturating_sub(15)..].join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Start munged (as user munge, with the key of /etc/munge), slurmctld and slurmd (as root).
    fn start() -> Cluster {
        for program in ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {program}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                found,
                "{program} is not installed: the Slurm test needs Debian's slurm-wlm and munge \
                 (make setup-slurm installs them)"
            );
        }
        let dir = tempfile::tempdir().expect("a temporary directory");
        let root = dir.path();
        // munged checks that every directory above its socket is reachable by everyone.
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let munge_dir = root.join("munge");
        std::fs::create_dir(&munge_dir).unwrap();
        std::fs::set_permissions(&munge_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (uid, gid) = (id_of("-u", "munge"), id_of("-g", "munge"));
        std::os::unix::fs::chown(&munge_dir, Some(uid), Some(gid)).unwrap();
        let socket = munge_dir.join("socket");
        let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
        let conf = format!(
            "ClusterName=clado-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={socket}
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs={nproc} State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
",
            ctld_port = free_port(),
            slurmd_port = free_port(),
            socket = socket.display(),
            root = root.display(),
        );
        std::fs::write(root.join("slurm.conf"), conf).unwrap();
        let mut cluster = Cluster {
            dir,
            daemons: Vec::new(),
        };
        let root = cluster.dir.path().to_path_buf();
        let spawn = |cluster: &mut Cluster, name: &'static str, cmd: &mut Command| {
            let log = std::fs::File::create(root.join(format!("{name}.out"))).unwrap();
            let child = cmd
                .env("SLURM_CONF", root.join("slurm.conf"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
            cluster.daemons.push((name, child));
        };
        let munge_file = |name: &str| format!("--{name}={}", munge_dir.join(name).display());
        spawn(
            &mut cluster,
            "munged",
            Command::new("munged")
                .args(["--foreground", &format!("--socket={}", socket.display())])
                .args([munge_file("pid-file"), munge_file("seed-file")])
                .arg(format!("--log-file={}", root.join("munged.log").display()))
                .uid(uid)
                .gid(gid),
        );
        cluster.wait_for("munged's socket", || socket.exists());
        spawn(&mut cluster, "slurmctld", Command::new("slurmctld").arg("-D"));
        spawn(
            &mut cluster,
            "slurmd",
            Command::new("slurmd").args(["-D", "-N", "localhost"]),
        );
        let conf = cluster.conf();
        cluster.wait_for("the node to be idle (sinfo)", || {
            let out = Command::new("sinfo")
                .env("SLURM_CONF", &conf)
                .args(["-h", "-o", "%t"])
                .output();
            out.is_ok_and(|o| text(&o.stdout).trim() == "idle")
        });
        cluster
    }

    /// Poll `ready` until it holds; fail with the daemons' logs after START_TIMEOUT or when a
    /// daemon has exited.
    fn wait_for(&mut self, what: &str, mut ready: impl FnMut() -> bool) {
        let start = Instant::now();
        while !ready() {
            let exited = self
                .daemons
                .iter_mut()
                .find_map(|(name, child)| child.try_wait().ok().flatten().map(|status| (*name, status)));
            if let Some((name, status)) = exited {
                let out = std::fs::read_to_string(self.dir.path().join(format!("{name}.out"))).unwrap_or_default();
                panic!(
                    "{name} exited ({status}) while waiting for {what}: this machine cannot run the \
                     cluster:\n{out}\n{}",
                    self.log_tails()
                );
            }
            assert!(
                start.elapsed() < START_TIMEOUT,
                "waited {START_TIMEOUT:?} for {what}:\n{}",
                self.log_tails()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.daemons.len() == 3 {
            // Jobs left by a failed test: cancel them while slurmd can still end them.
            let _ = self.command("scancel").arg("--me").status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                let queue = self.command("squeue").args(["--me", "-h"]).output();
                if queue.map_or(true, |o| o.stdout.is_empty()) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        // slurmd, slurmctld, then munged: each by the PID this test started.
        for (name, child) in self.daemons.iter_mut().rev() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let start = Instant::now();
            while matches!(child.try_wait(), Ok(None)) && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(100));
            }
            if matches!(child.try_wait(), Ok(None)) {
                eprintln!("{name} (pid {}) ignored SIGTERM: killing it", child.id());
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// `make -f scripts/experiment.mk` of the perturbation of metric `loss`, into `out`.
fn graph(out: &Path, launcher: &[&str]) -> Command {
    let mut cmd = Command::new("make");
    cmd.current_dir(workspace_root())
        .args(["-f", "scripts/experiment.mk", "EXP=slurm-test"])
        .arg(format!("OUT={}", out.display()))
        .arg(format!("BIN={}", bin("perturb").parent().unwrap().display()))
        .args([&format!("SAMPLES={SAMPLES}"), &format!("OPTIONS={OPTIONS}")])
        .args(launcher)
        .arg(out.join("loss/G.npy"));
    cmd
}

/// index.json without the seconds spent (the one field that differs between two runs).
fn index_without_time(path: &Path) -> serde_json::Value {
    let mut index: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let seconds = index
        .get_mut("diagnostics")
        .and_then(|d| d.as_object_mut())
        .and_then(|d| d.remove("seconds"));
    assert!(seconds.is_some(), "{}: diagnostics.seconds", path.display());
    index
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_sharded_perturbation_on_slurm_survives_a_cancelled_task_and_equals_one_process() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let (local, slurm) = (dir.path().join("local"), dir.path().join("slurm"));

    let one = output(&mut graph(&local, &[]));
    assert!(one.status.success(), "the local graph:\n{}", text(&one.stderr));

    // The Slurm graph, in the background: cancel one task of the array once it has finished
    // some units, then expect the stage to fail naming that shard.
    let sharded = [
        "LAUNCHER=slurm".to_string(),
        format!("SHARDS={SHARDS}"),
        "SLURM_TIME=10".into(),
    ];
    let sharded: Vec<&str> = sharded.iter().map(String::as_str).collect();
    let log = dir.path().join("make-slurm.log");
    let mut first = graph(&slurm, &sharded)
        .env("SLURM_CONF", cluster.conf())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("run make");
    let start = Instant::now();
    let (task, shard) = loop {
        assert!(
            start.elapsed() < STAGE_TIMEOUT,
            "no task of the array finished a unit:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(
            first.try_wait().unwrap().is_none(),
            "make ended before a task could be cancelled:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let running =
            output(
                cluster
                    .command("squeue")
                    .args(["--me", "-h", "-n", "perturb-loss", "-t", "RUNNING", "-o", "%i"]),
            );
        // A running task whose resume directory holds a finished unit (more than its job.json).
        let busy = text(&running.stdout).lines().find_map(|task| {
            let shard: usize = task.split_once('_')?.1.parse().ok()?;
            let units = std::fs::read_dir(slurm.join(format!("loss/work/shard{shard}"))).ok()?;
            (units.count() >= 2).then(|| (task.to_string(), shard))
        });
        if let Some(found) = busy {
            break found;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let cancel = output(cluster.command("scancel").arg(&task));
    assert!(cancel.status.success(), "scancel {task}: {}", text(&cancel.stderr));
    let status = first.wait().unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "a cancelled shard fails the graph:\n{stderr}");
    assert!(
        stderr.contains(&format!("shard {shard}/{SHARDS} left no result")),
        "the failure names shard {shard}:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("{}] Error", slurm.join("loss/G.npy").display())),
        "make names the stage:\n{stderr}"
    );
    let work = slurm.join("loss/work");
    assert!(!slurm.join("loss/G.npy").exists(), "no G after a failed stage");
    assert!(
        !work.join(format!("shard{shard}.json")).exists(),
        "the cancelled shard left no result"
    );
    for k in (1..=SHARDS).filter(|&k| k != shard) {
        assert!(
            work.join(format!("shard{k}.json")).exists(),
            "shard {k} finished:\n{stderr}"
        );
    }
    let kept = std::fs::read_dir(work.join(format!("shard{shard}"))).unwrap().count();
    // What the cancelled task left is nothing the merge takes for a result.
    let present: Vec<String> = (1..=SHARDS)
        .filter(|&k| k != shard)
        .map(|k| work.join(format!("shard{k}.json")).display().to_string())
        .collect();
    let g = dir.path().join("incomplete.npy");
    let index = dir.path().join("incomplete.json");
    let mut merge: Vec<&str> = vec!["merge"];
    merge.extend(present.iter().map(String::as_str));
    merge.extend(["-o", g.to_str().unwrap(), "--index", index.to_str().unwrap()]);
    let refused = clado_tests::run("perturb", &merge, b"").code(2);
    assert!(
        refused.contains(&format!("shard {shard}/{SHARDS} is missing")),
        "{refused}"
    );
    assert!(!g.exists() && !index.exists(), "the refused merge wrote nothing");

    // The rerun submits the cancelled shard alone, which resumes, and the merge.
    let second = output(graph(&slurm, &sharded).env("SLURM_CONF", cluster.conf()));
    let stderr = text(&second.stderr);
    assert!(second.status.success(), "the rerun completes the graph:\n{stderr}");
    assert!(
        stderr.contains(&format!("shards {shard} of {SHARDS}")),
        "only shard {shard} is resubmitted:\n{stderr}"
    );
    assert!(
        kept >= 2,
        "the cancelled task had kept finished units for the resubmission"
    );
    assert!(!work.exists(), "the work directory is dropped after the merge");

    for file in ["calib.json", "loss/G.npy", "loss/G.se.npy"] {
        assert!(
            read(&slurm.join(file)) == read(&local.join(file)),
            "{file}: the Slurm graph's differs from the single-process run"
        );
    }
    assert_eq!(
        index_without_time(&slurm.join("loss/index.json")),
        index_without_time(&local.join("loss/index.json")),
        "index.json, apart from the seconds spent"
    );
    drop(cluster);
}

/// The model of the `--shard slurm` checks: two layers and 4 samples, to keep them quick.
fn perturb_shard(shard: &str, out: &Path, env: &[(&str, &str)]) -> clado_tests::Run {
    let checkpoint = clado_tests::fixture_checkpoint();
    let out = out.to_str().unwrap();
    let args = [
        "--arch",
        "resnet20",
        "--weights",
        &checkpoint,
        "--samples",
        "4",
        "--options",
        OPTIONS,
        "--layers",
        "conv1,layer1.0.conv1,fc",
        "--shard",
        shard,
        "-o",
        out,
        "-q",
    ];
    run_with_env("perturb", &args, b"", None, env)
}

#[test]
fn shard_slurm_takes_k_and_n_from_the_job_array() {
    let dir = tempfile::tempdir().unwrap();
    let explicit = dir.path().join("explicit.json");
    let from_array = dir.path().join("array.json");
    perturb_shard("2/3", &explicit, &[]).success();
    // Task 6 of --array=4-8:2 is the second of three.
    let array = [
        ("SLURM_ARRAY_TASK_ID", "6"),
        ("SLURM_ARRAY_TASK_MIN", "4"),
        ("SLURM_ARRAY_TASK_STEP", "2"),
        ("SLURM_ARRAY_TASK_COUNT", "3"),
    ];
    perturb_shard("slurm", &from_array, &array).success();
    let partial = |path: &Path| {
        let mut value: serde_json::Value = serde_json::from_slice(&read(path)).unwrap();
        value.as_object_mut().unwrap().remove("seconds").expect("seconds");
        value
    };
    assert_eq!(partial(&from_array), partial(&explicit));
    assert_eq!(partial(&explicit)["shard"], serde_json::json!({"index": 2, "count": 3}));
}

#[test]
fn shard_slurm_outside_a_job_array_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("part.json");
    // The test may itself run inside a Slurm job: the variables are cleared for the tool.
    let mut cmd = Command::new(bin("perturb"));
    for var in ["SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT"] {
        cmd.env_remove(var);
    }
    let checkpoint = clado_tests::fixture_checkpoint();
    let run = output(cmd.args([
        "--arch",
        "resnet20",
        "--weights",
        &checkpoint,
        "--options",
        OPTIONS,
        "--shard",
        "slurm",
        "-o",
        out.to_str().unwrap(),
    ]));
    let stderr = text(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--shard slurm: SLURM_ARRAY_TASK_ID is not set"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(!out.exists(), "nothing written");
}
