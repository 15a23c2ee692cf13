"""Every launch mode in the README's table, run for real with 2 gloo processes on the tiny DB and model of
tests/test_train.py:

- multi-node: two `accelerate launch` commands on this host as machine ranks 0 and 1 over 127.0.0.1, through
  accelerate_configs/multi_node_cpu.yaml and through accelerate_configs/multi_node.yaml's settings;
- SLURM: a one-host cluster (munged, slurmctld and two slurmd nodes) runs `sbatch launch/slurm_multinode.sbatch`;
- W&B sweeps: wandb's own Agent runs two trials of launch/sweep.yaml against a stub of the W&B backend.

The multi-node and SLURM runs must log exactly what one machine with 2 processes (launch/cpu_single_node.sh) logs.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.dbfactory import write_db
from tests.test_train import common_args, env, final_metrics, records

REPO = Path(__file__).resolve().parents[1]
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch"]
# fp32 everywhere: the runs are compared number for number, whatever the launch config's precision says
FP32 = ["--wandb-mode", "disabled", "--mixed-precision", "no"]
RUN_TIMEOUT = 420


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("launch")
    write_db(root / "glyphs.db")
    return root


@pytest.fixture(scope="module")
def reference(workdir: Path) -> list[dict]:
    """One machine, 2 processes, through the documented CPU script."""
    res = subprocess.run(["bash", "launch/cpu_single_node.sh", *common_args(workdir, "one_machine", *FP32)],
                         cwd=REPO, env={**env(), "PROCS": "2", "THREADS": "1", "PYTHON": sys.executable},
                         capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "world size 2 (MULTI_CPU)" in res.stdout
    return records(workdir / "one_machine")


def without_timing(rs: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("time", "img_per_s", "train_img_per_s")} for r in rs]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_group(proc: subprocess.Popen) -> None:
    """Our own launcher and the processes it started (its session), nothing else."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def launch_machines(workdir: Path, out: str, launcher_args: list[list[str]],
                    trainer_args: list[list[str]]) -> list[tuple[int, str, str]]:
    """One `accelerate launch` per machine rank, all at once; (returncode, stdout, stderr) per machine."""
    procs, logs = [], []
    for rank, (launch, trainer) in enumerate(zip(launcher_args, trainer_args)):
        log = (workdir / f"{out}.machine{rank}.out").open("w+"), (workdir / f"{out}.machine{rank}.err").open("w+")
        cmd = [*ACCELERATE, *launch, "-m", "glyph_train.train", *common_args(workdir, out, *FP32, *trainer)]
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=log[0], stderr=log[1],
                                      start_new_session=True))
        logs.append(log)
    deadline, finished = time.monotonic() + RUN_TIMEOUT, False
    try:
        for proc in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        finished = True
    except subprocess.TimeoutExpired:
        pass
    finally:
        for proc in procs:
            kill_group(proc)
    results = []
    for proc, (stdout, stderr) in zip(procs, logs):
        stdout.seek(0), stderr.seek(0)
        results.append((proc.returncode, stdout.read(), stderr.read()))
        stdout.close(), stderr.close()
    assert finished, f"the machines did not finish in {RUN_TIMEOUT} s: {[err[-1500:] for _, _, err in results]}"
    return results


def assert_two_machines_match_one(results: list[tuple[int, str, str]], run_dir: Path, reference: list[dict]) -> None:
    for rank, (code, stdout, stderr) in enumerate(results):
        assert code == 0, f"machine {rank}: {stderr[-3000:]}"
        # printed by each machine's local main process: rank 1 really joined from the second launcher
        assert "world size 2 (MULTI_CPU)" in stdout, f"machine {rank}: {stdout[-2000:]}"
    assert without_timing(records(run_dir)) == without_timing(reference)


def two_machines(config: str, port: int, *overrides: str) -> list[list[str]]:
    return [["--config_file", str(REPO / config), *overrides, "--machine_rank", str(rank),
             "--main_process_ip", "127.0.0.1", "--main_process_port", str(port)] for rank in (0, 1)]


def test_two_machines_through_cpu_cluster_config(workdir: Path, reference: list[dict]) -> None:
    results = launch_machines(workdir, "cpu_cluster", two_machines("accelerate_configs/multi_node_cpu.yaml",
                                                                   free_port()), [[], []])
    assert_two_machines_match_one(results, workdir / "cpu_cluster", reference)


def test_two_machines_through_multi_node_yaml(workdir: Path, reference: list[dict]) -> None:
    # multi_node.yaml as the SLURM script uses it; its GPU-sized process count and bf16 overridden for CPUs
    overrides = ["--num_machines", "2", "--num_processes", "2", "--mixed_precision", "no"]
    results = launch_machines(workdir, "multi_node_yaml", two_machines("accelerate_configs/multi_node.yaml",
                                                                       free_port(), *overrides), [[], []])
    assert_two_machines_match_one(results, workdir / "multi_node_yaml", reference)


def test_machines_started_with_different_flags_are_refused(workdir: Path) -> None:
    results = launch_machines(workdir, "mismatch", two_machines("accelerate_configs/multi_node_cpu.yaml", free_port()),
                              [["--lr-head", "0.02"], ["--lr-head", "0.01"]])
    assert all(code != 0 for code, _, _ in results)
    errors = "".join(stderr for _, _, stderr in results)
    assert ("glyph-train train: error: process 1 was started with other flags than process 0 "
            "(lr_head = 0.01 vs 0.02)") in errors, errors[-3000:]
    assert not (workdir / "mismatch" / "metrics.jsonl").exists()


# ---------------------------------------------------------------------------------------------------- SLURM
SLURM_TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo", "scancel")
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def slurm_tools_missing() -> list[str]:
    return [t for t in SLURM_TOOLS if not shutil.which(t, path=SBIN_PATH)]


SLURM_CONF = """\
ClusterName=glyphtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={dir}/munge.sock
SlurmUser=root
SlurmdUser=root
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool/%n
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd-%n.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MailProg=/bin/true
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=node1 NodeHostname={host} NodeAddr=127.0.0.1 CPUs={cpus} Port={node1_port}
NodeName=node2 NodeHostname={host} NodeAddr=127.0.0.1 CPUs={cpus} Port={node2_port}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


class OneHostCluster:
    """munged, slurmctld and two slurmd (node1, node2) on this host, all files in one fresh directory."""

    def __init__(self) -> None:
        # munged refuses a socket path that not everyone can traverse, so not under pytest's 0700 tmp dirs
        self.dir = Path(tempfile.mkdtemp(prefix="glyph-slurm-"))
        self.dir.chmod(0o755)
        self.daemons: list[subprocess.Popen] = []
        self.env = {**os.environ, "PATH": SBIN_PATH, "SLURM_CONF": str(self.dir / "slurm.conf")}

    def start(self) -> None:
        key = self.dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self._daemon("munged", "-F", f"--socket={self.dir}/munge.sock", f"--key-file={key}",
                     f"--log-file={self.dir}/munged.log", f"--pid-file={self.dir}/munged.pid",
                     f"--seed-file={self.dir}/munged.seed")
        self._wait_for(lambda: (self.dir / "munge.sock").exists(), "munged's socket")
        for sub in ("state", "spool/node1", "spool/node2"):
            (self.dir / sub).mkdir(parents=True)
        (self.dir / "slurm.conf").write_text(SLURM_CONF.format(
            host=socket.gethostname().split(".")[0], dir=self.dir, cpus=os.cpu_count() or 1,
            ctld_port=free_port(), node1_port=free_port(), node2_port=free_port()))
        conf = str(self.dir / "slurm.conf")
        self._daemon("slurmctld", "-D", "-f", conf)
        self._daemon("slurmd", "-D", "-f", conf, "-N", "node1")
        self._daemon("slurmd", "-D", "-f", conf, "-N", "node2")
        self._wait_for(lambda: self._run("sinfo", "-h", "-N", "-o", "%N %T").split() == ["node1", "idle", "node2", "idle"],
                       "both nodes idle")

    def stop(self) -> None:
        for proc in reversed(self.daemons):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.daemons):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def logs(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in sorted(self.dir.glob("*.log")))

    def job_state(self, job: str) -> dict[str, str]:
        fields = self._run("scontrol", "-o", "show", "job", job).split()
        return dict(f.split("=", 1) for f in fields if "=" in f)

    def wait_for_job(self, job: str, timeout: float) -> dict[str, str]:
        """Poll every second (sbatch --wait polls at up to 30 s intervals)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.job_state(job)
            if state.get("JobState") not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", None):
                return state
            time.sleep(1)
        self._run("scancel", job)
        raise AssertionError(f"SLURM job {job} still {self.job_state(job).get('JobState')} after {timeout} s\n"
                             + self.logs())

    def _run(self, *cmd: str) -> str:
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=30).stdout

    def _daemon(self, *cmd: str) -> None:
        log = (self.dir / f"{cmd[0]}-{len(self.daemons)}.out").open("w")
        self.daemons.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT))

    def _wait_for(self, ready, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [p.args[0] for p in self.daemons if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise AssertionError(f"one-host SLURM cluster: no {what} ({dead or 'timeout'})\n{self.logs()}")
            time.sleep(0.5)


@pytest.fixture(scope="module")
def slurm_cluster():
    if slurm_tools_missing():
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.skip(f"SLURM test needs {', '.join(slurm_tools_missing())}: Debian's slurm-wlm and munge, "
                        f"which tests/install_slurm.sh installs when run as root with apt-get")
        subprocess.run(["bash", str(REPO / "tests/install_slurm.sh")], check=True, timeout=900)
        assert not slurm_tools_missing(), "tests/install_slurm.sh did not install slurm-wlm and munge"
    cluster = OneHostCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def test_slurm_sbatch_on_two_nodes_matches_one_machine(workdir: Path, reference: list[dict],
                                                       slurm_cluster: OneHostCluster) -> None:
    output = slurm_cluster.dir / "job-%j.out"
    submit = subprocess.run(
        ["sbatch", "--parsable", "--nodes", "2", "--gpus-per-node", "0", "--cpus-per-task", "1", "--time", "15",
         "--output", str(output), "launch/slurm_multinode.sbatch", *common_args(workdir, "slurm", *FP32)],
        cwd=REPO, env={**env(), **slurm_cluster.env, "PYTHON": sys.executable, "MAIN_PORT": str(free_port())},
        capture_output=True, text=True, timeout=60)
    assert submit.returncode == 0, submit.stderr + slurm_cluster.logs()
    job = submit.stdout.strip().split(";")[0]
    state = slurm_cluster.wait_for_job(job, RUN_TIMEOUT)
    log = Path(str(output).replace("%j", job)).read_text()
    assert (state["JobState"], state["ExitCode"]) == ("COMPLETED", "0:0"), log[-3000:]
    assert state["NumNodes"] == "2" and "2 nodes x 1 processes (accelerate_configs/multi_node_cpu.yaml)" in log
    assert log.count("world size 2 (MULTI_CPU)") == 2, log[-3000:]  # once per node: each node's local main
    assert without_timing(records(workdir / "slurm")) == without_timing(reference)


# ---------------------------------------------------------------------------------------------------- W&B sweeps
class StubSweepBackend:
    """The W&B backend as wandb's sweep Agent sees it: the GraphQL answers to its three calls (fetch the sweep,
    register the agent, heartbeat), no network. Like the real controller, it hands out one trial per heartbeat
    to an idle agent; each trial's values come from launch/sweep.yaml's parameter space."""

    def __init__(self, sweep_config: dict, trials: int) -> None:
        self.settings = {"entity": "stub-entity", "project": "glyph-train"}
        self._service_api = self  # the Agent calls api._service_api.execute_graphql(...)
        self.sweep_config = sweep_config
        self.trials = [self._trial(i, trials) for i in range(trials)]
        self.started: list[dict] = []
        self.run_states: list[dict] = []

    def _trial(self, i: int, n: int) -> dict:
        """Trial i of n: spread over each parameter's range, so every trial differs from the others."""
        args = {}
        for name, spec in self.sweep_config["parameters"].items():
            if "values" in spec:
                value = spec["values"][(i + 1) % len(spec["values"])]
            else:  # log_uniform_values
                lo, hi = spec["min"], spec["max"]
                value = lo * (hi / lo) ** ((i + 1) / (n + 1))
            args[name] = {"value": value}
        return {"type": "run", "run_id": f"trial{i}{os.urandom(3).hex()}", "args": args,
                "program": self.sweep_config["program"]}

    def execute_graphql(self, query: str, variables: dict | None = None, **_kw) -> dict:
        variables = variables or {}
        if "query SweepWithRuns" in query:
            return {"project": {"sweep": {"name": variables["sweep"], "config": yaml.safe_dump(self.sweep_config),
                                          "runs": {"edges": []}}}}
        if "mutation CreateAgent" in query:
            return {"createAgent": {"agent": {"id": "stub-agent"}}}
        if "mutation Heartbeat" in query:
            running = json.loads(variables["runState"])
            self.run_states.append(running)
            commands = []
            if not running and len(self.started) < len(self.trials):
                commands = [self.trials[len(self.started)]]
                self.started.append(commands[0])
            return {"agentHeartbeat": {"agent": {"id": "stub-agent"}, "commands": json.dumps(commands)}}
        raise AssertionError(f"the stub W&B backend got an unexpected call: {query.split('(')[0].strip()}")


@pytest.fixture
def sweep_dir(workdir: Path, tmp_path: Path) -> Path:
    """A directory laid out like the repository for sweep.yaml's relative paths: the real accelerate configs and
    launch/sweep_base.yaml with the tiny DB and model of these tests in place of the production settings."""
    (tmp_path / "launch").mkdir()
    (tmp_path / "accelerate_configs").symlink_to(REPO / "accelerate_configs")
    base = yaml.safe_load((REPO / "launch/sweep_base.yaml").read_text())
    assert base["out_dir"] == "runs/sweep/$WANDB_RUN_ID"
    base.update(db=str(workdir / "glyphs.db"), cache_dir=str(workdir / "cache"), val_frac=0.3, model="test_vit",
                img_size=32, epochs=1, batch_size=16, num_workers=0, log_interval=5, char_classes=None,
                min_label_count=1, mixed_precision="no", wandb_mode="offline")  # the cache of common_args
    (tmp_path / "launch/sweep_base.yaml").write_text(yaml.safe_dump(base))
    return tmp_path


def test_wandb_agent_runs_two_sweep_trials_with_two_processes_each(sweep_dir: Path, monkeypatch, capfd) -> None:
    import wandb
    from wandb.wandb_agent import Agent

    sweep_config = yaml.safe_load((REPO / "launch/sweep.yaml").read_text())
    backend = StubSweepBackend(sweep_config, trials=2)
    monkeypatch.setattr(wandb, "Api", lambda *a, **kw: backend)  # the Agent re-creates its Api after each trial
    monkeypatch.chdir(sweep_dir)
    for name, value in {**env(), "WANDB_SWEEP_ID": "stub-sweep", "WANDB_DIR": str(sweep_dir),
                        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
                        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
                        "WANDB_RUN_ID": "", "WANDB_SWEEP_PARAM_PATH": ""}.items():
        monkeypatch.setenv(name, value)  # restored afterwards, also the two the Agent sets per trial
    monkeypatch.delenv("GLYPH_TRAIN_NUM_PROCESSES", raising=False)

    agent = Agent(backend, multiprocessing.Queue(), sweep_id="stub-sweep", count=2)
    agent.POLL_INTERVAL = 0.2  # seconds between the agent's polls (5 s by default)
    runner = threading.Thread(target=agent.run, daemon=True)
    runner.start()
    runner.join(timeout=2 * RUN_TIMEOUT)
    if runner.is_alive():
        for proc in agent._run_processes.values():  # the Agent starts each trial in its own process group
            os.killpg(proc._popen.pid, signal.SIGKILL)
        pytest.fail("the sweep agent did not finish its two trials")

    output = capfd.readouterr()
    assert [t["run_id"] for t in backend.started] == [t["run_id"] for t in backend.trials]
    assert {run_id for states in backend.run_states for run_id in states} == {t["run_id"] for t in backend.trials}
    assert output.out.count("world size 2 (MULTI_CPU)") == 2, output.err[-3000:]
    metric = sweep_config["metric"]["name"]
    for trial in backend.trials:
        run_dir = sweep_dir / "runs/sweep" / trial["run_id"]  # sweep_base.yaml's out_dir, one per trial
        assert (run_dir / "export").is_dir(), output.err[-3000:]
        # every process got the trial's flags: the trainer refuses to start when its processes disagree
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        for name, arg in trial["args"].items():
            assert config[name.replace("-", "_")] == pytest.approx(arg["value"], rel=1e-12)
        wandb_runs = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(wandb_runs) == 1, wandb_runs
        logged = list(wandb_records(wandb_runs[0]))
        run = next(r.run for r in logged if r.WhichOneof("record_type") == "run")
        assert (run.run_id, run.sweep_id) == (trial["run_id"], "stub-sweep")  # the agent's run, in its sweep
        history = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                   for r in logged if r.WhichOneof("record_type") == "history" for item in r.history.item}
        assert history.get(metric) == final_metrics(run_dir)[metric.split("/", 1)[1]], sorted(history)


def wandb_records(path: Path):
    """The records of a W&B run file (run-*.wandb): LevelDB's log format (32 KiB blocks of chunks, each with a
    7-byte header) after a 7-byte ':W&B' file header, one protobuf Record per logical entry."""
    from wandb.proto import wandb_internal_pb2

    block, data = 32768, path.read_bytes()
    assert data[:4] == b":W&B", path
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk: one record is complete
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""
