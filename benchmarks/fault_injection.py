"""Fault injection against run directories, through the command line as a user runs it.

    python benchmarks/fault_injection.py                 # every case, 20 random kill -9 trials
    python benchmarks/fault_injection.py --kills 5       # fewer kill trials

Cases: two trainings with one run name started together; a resume with a changed architecture; a resume from a
corrupt checkpoint; a second `steerlab demo` with another dimension; config files with YAML 1.1 numbers and wrong
types; repeated evaluations and bad episode counts; `steerlab noise` with a target of the wrong dimension and with
a sampler of the other process; SIGINT and SIGTERM during training followed by --resume; a byte flipped inside
the weights; and ``kill -9`` during a training run with frequent checkpoints (half the trials at a uniformly
random time, half inside a checkpoint write seen in progress), each followed by --resume and compared with the
uninterrupted run.

For every case it records whether the outcome is the expected one, whether any command printed a Python
traceback, and (kill trials) whether the resumed run reproduced the uninterrupted run exactly (final weights and
every logged loss) and whether anything was lost. Writes benchmarks/results/fault_injection.json.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine_brief, parser, save

import torch

from steerlab.train.checkpoint import list_checkpoints, load_weights

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SMALL = ["--batch-size", "32", "--policy.width", "64", "--no-progress", "--threads", "1"]


class Case:
    def __init__(self, name: str):
        self.name, self.commands, self.tracebacks, self.checks = name, [], 0, {}

    def run(self, args: list[str], cwd: Path, expect_ok: bool | None = None, timeout: float = 600, **kw):
        p = subprocess.run([sys.executable, "-m", "steerlab.cli", *args], cwd=cwd, env=ENV, capture_output=True,
                           text=True, timeout=timeout, **kw)
        self.record(args, p.returncode, p.stderr)
        if expect_ok is not None:
            self.check(f"exit {'0' if expect_ok else 'non-zero'}: {' '.join(args[:2])}", (p.returncode == 0) == expect_ok)
        return p

    def record(self, args, code, stderr):
        tb = "Traceback (most recent call last)" in stderr
        self.tracebacks += tb
        last = [ln for ln in stderr.strip().splitlines() if ln.strip()][-1:] or [""]
        self.commands.append({"args": " ".join(str(a) for a in args), "exit": code, "traceback": tb,
                              "last_stderr_line": last[0][:300]})
        if tb:
            self.commands[-1]["traceback_text"] = stderr[stderr.index("Traceback (most recent call last)"):][:3000]

    def check(self, what: str, ok: bool):
        self.checks[what] = bool(ok)

    def result(self) -> dict:
        ok = all(self.checks.values()) and self.tracebacks == 0
        return {"ok": ok, "tracebacks": self.tracebacks, "checks": self.checks, "commands": self.commands}


def train_args(data: Path, out: Path, name: str, steps: int, *extra, evaluate: bool = False,
               small: bool = True) -> list[str]:
    return ["train", "mse-particle", "--dataset", str(data), "--out-dir", str(out), "--run-name", name, "--steps",
            str(steps), *([] if evaluate else ["--no-eval"]), *(SMALL if small else ["--no-progress"]), *extra]


def weights_equal(a: Path, b: Path) -> bool:
    ca, cb = list_checkpoints(a), list_checkpoints(b)
    if not ca or not cb or ca[-1].name != cb[-1].name:
        return False
    wa, wb = load_weights(ca[-1]), load_weights(cb[-1])
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def losses(run: Path) -> list[tuple[str, str]]:
    import csv

    with open(run / "metrics.csv") as f:
        return [(r["step"], r["loss"]) for r in csv.DictReader(f)]


def case_race(data, root) -> dict:
    c = Case("two trainings, one run name")
    procs = [subprocess.Popen([sys.executable, "-m", "steerlab.cli", *train_args(data, root, "same", 600, "--seed", str(s))],
                              cwd=root, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for s in (0, 1)]
    outs = [p.communicate(timeout=600) for p in procs]
    for s, (p, (_, err)) in enumerate(zip(procs, outs)):
        c.record(["train", f"--seed {s}"], p.returncode, err)
    codes = [p.returncode for p in procs]
    c.check("exactly one succeeds", sorted(codes) == [0, 1])
    if sorted(codes) == [0, 1]:
        winner = codes.index(0)
        err = outs[1 - winner][1]
        c.check("the other is told who holds the run", "is in use by" in err or "already holds checkpoints" in err)
        c.check("the run holds the winner's config", json.loads((root / "same" / "config.json").read_text())["seed"] == winner)
    return c.result()


def case_resume_changed(data, root) -> dict:
    c = Case("resume with a changed architecture")
    c.run(train_args(data, root, "wide", 50), root, expect_ok=True)
    before = (root / "wide" / "config.json").read_bytes()
    p = c.run(train_args(data, root, "wide", 100, "--resume", "--policy.width", "32"), root, expect_ok=False)
    c.check("error names the field", "policy.width: 64 -> 32" in p.stderr)
    c.check("config.json unchanged", (root / "wide" / "config.json").read_bytes() == before)
    c.run(["eval", str(root / "wide"), "--episodes", "2"], root, expect_ok=True)
    return c.result()


def case_resume_corrupt(data, root) -> dict:
    c = Case("resume from a corrupt checkpoint")
    c.run(train_args(data, root, "corrupt", 200, "--ckpt-interval", "100"), root, expect_ok=True)
    before = (root / "corrupt" / "config.json").read_bytes()
    (list_checkpoints(root / "corrupt")[-1] / "trainer.pt").write_bytes(b"\0" * 100)
    p = c.run(train_args(data, root, "corrupt", 300, "--ckpt-interval", "100", "--resume"), root, expect_ok=False)
    c.check("error says corrupt and how to fall back", "corrupt" in p.stderr and "earlier checkpoint" in p.stderr)
    c.check("config.json unchanged", (root / "corrupt" / "config.json").read_bytes() == before)
    return c.result()


def case_demo_dims(root) -> dict:
    c = Case("second demo with another dimension")
    demo = ["demo", "--steps", "5", "--episodes", "2", "--out-dir", str(root / "demos")]
    c.run(demo, root, expect_ok=True)
    before = (root / "demos" / "demo" / "config.json").read_bytes()
    p = c.run([*demo, "--n-dim", "4"], root, expect_ok=False)
    c.check("error names n_dim and --run-name", "n_dim: 2 -> 4" in p.stderr and "--run-name" in p.stderr)
    c.check("config.json unchanged", (root / "demos" / "demo" / "config.json").read_bytes() == before)
    return c.result()


def case_config_types(data, root) -> dict:
    c = Case("config-file types")
    f = root / "sci.yaml"
    f.write_text("lr: 1e-3\n")
    c.run(train_args(data, root, "sci", 5, "--config-file", str(f)), root, expect_ok=True)
    c.check("1e-3 is a float", json.loads((root / "sci" / "config.json").read_text())["lr"] == 1e-3)
    f = root / "bad.yaml"
    f.write_text('batch_size: "abc"\n')
    p = c.run(train_args(data, root, "badtype", 5, "--config-file", str(f), small=False), root, expect_ok=False)
    c.check("error names key, type and value", "batch_size: expected int, got 'abc'" in p.stderr)
    c.check("no run directory left", not (root / "badtype").exists())
    return c.result()


def case_eval(data, root) -> dict:
    c = Case("evaluations never replace results")
    c.run(train_args(data, root, "ev", 20, "--eval.episodes", "3", "--eval.batch", "3", evaluate=True), root,
          expect_ok=True)
    top = (root / "ev" / "metrics.json").read_bytes()
    c.run(["eval", str(root / "ev"), "--episodes", "2"], root, expect_ok=True)
    c.check("training-time metrics kept", (root / "ev" / "metrics.json").read_bytes() == top)
    c.check("new evals/ directory", any((d / "metrics.json").exists() for d in (root / "ev" / "evals").iterdir()))
    for n in ("0", "-3"):
        p = c.run(["eval", str(root / "ev"), "--episodes", n], root, expect_ok=False)
        c.check(f"--episodes {n} refused clearly", "positive integer" in p.stderr)
    return c.result()


def case_noise(data, root) -> dict:
    c = Case("noise arguments checked first")
    c.run(["train", "flow-particle", "--dataset", str(data), "--out-dir", str(root), "--run-name", "flow", "--steps", "5",
           "--no-eval", "--no-progress", "--threads", "1", "--batch-size", "32"], root, expect_ok=True)
    p = c.run(["noise", str(root / "flow"), "--objective", "end-distance", "--target", "0.1", "--no-progress"], root,
              expect_ok=False)
    c.check("wrong target dimension named", "2 dimensions" in p.stderr)
    p = c.run(["noise", str(root / "flow"), "--sampler", "ddim", "--no-progress"], root, expect_ok=False)
    c.check("wrong sampler named", "does not apply to a flow policy" in p.stderr)
    c.check("no output directory left", not (root / "flow" / "noise").exists())
    return c.result()


def case_signal(data, root, sig: int) -> dict:
    name = signal.Signals(sig).name
    c = Case(f"{name} during training, then --resume")
    steps = 3000
    args = train_args(data, root, f"sig-ref-{name}", steps, "--ckpt-interval", "100000", "--log-interval", "7")
    c.run(args, root, expect_ok=True)
    cut = train_args(data, root, f"sig-{name}", steps, "--ckpt-interval", "100000", "--log-interval", "7")
    p = subprocess.Popen([sys.executable, "-m", "steerlab.cli", *cut], cwd=root, env=ENV, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    csv = root / f"sig-{name}" / "metrics.csv"
    while p.poll() is None and not (csv.exists() and len(csv.read_text().splitlines()) > 30):
        time.sleep(0.02)
    p.send_signal(sig)
    _, err = p.communicate(timeout=300)
    c.record(cut, p.returncode, err)
    c.check(f"exit code {128 + sig}", p.returncode == 128 + sig)
    c.check("says how to resume", "--resume" in err)
    ck = list_checkpoints(root / f"sig-{name}")
    c.check("checkpoint at the stopped step", bool(ck) and 0 < int(ck[-1].name.split("_")[1]) < steps)
    c.run([*cut, "--resume"], root, expect_ok=True)
    c.check("resume equals the uninterrupted run", weights_equal(root / f"sig-ref-{name}", root / f"sig-{name}")
            and losses(root / f"sig-ref-{name}") == losses(root / f"sig-{name}"))
    return c.result()


def case_flipped(data, root) -> dict:
    c = Case("byte flipped inside the weights")
    c.run(train_args(data, root, "flip", 5), root, expect_ok=True)
    f = list_checkpoints(root / "flip")[-1] / "model.safetensors"
    raw = bytearray(f.read_bytes())
    raw[len(raw) - 17] ^= 0x01
    f.write_bytes(bytes(raw))
    p = c.run(["eval", str(root / "flip"), "--episodes", "2"], root, expect_ok=False)
    c.check("named as corrupt", "is corrupt: its SHA-256" in p.stderr)
    return c.result()


def kill_trials(data, root, n: int, rng: random.Random) -> dict:
    """kill -9 of a run that takes T seconds uninterrupted, then --resume: even trials at a uniform time in [0, T];
    odd trials at the first checkpoint write seen in progress after a uniform wait in [0, 0.8 T] (a few ms into
    it), so that kills inside a write are not left to chance."""
    steps = 600
    # a wider net makes each checkpoint write (weights, Adam state, checksums, fsync) a sizeable share of the run's
    # time, so that a good share of the kills land inside one
    extra = ["--ckpt-interval", "10", "--log-interval", "10", "--keep-checkpoints", "2", "--policy.width", "512"]
    t0 = time.time()
    ref = subprocess.run([sys.executable, "-m", "steerlab.cli", *train_args(data, root, "kill-ref", steps, *extra)],
                         cwd=root, env=ENV, capture_output=True, text=True)
    wall = time.time() - t0
    assert ref.returncode == 0, ref.stderr[-2000:]
    trials = []
    for i in range(n):
        name = f"kill-{i:02d}"
        args = train_args(data, root, name, steps, *extra)
        p = subprocess.Popen([sys.executable, "-m", "steerlab.cli", *args], cwd=root, env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ck = root / name / "checkpoints"
        aim = "write" if i % 2 else "uniform"
        at = rng.uniform(0, wall)
        t_start = time.time()
        if aim == "uniform":
            time.sleep(at)
        else:  # after a uniform wait, kill as soon as a checkpoint write is seen in progress (polled every 0.5 ms)
            time.sleep(at * 0.8)
            while p.poll() is None and not (ck.exists() and any(q.name.startswith(".tmp-") for q in os.scandir(ck))):
                time.sleep(0.0005)
            time.sleep(rng.uniform(0, 0.003))
            at = time.time() - t_start
        p.kill()
        _, err1 = p.communicate()
        run = root / name
        mid_write = ck.exists() and any(q.name.startswith((".tmp-", ".trash-")) for q in ck.iterdir())
        step_at_kill = int(list_checkpoints(run)[-1].name.split("_")[1]) if list_checkpoints(run) else 0
        res = subprocess.run([sys.executable, "-m", "steerlab.cli", *args, "--resume"], cwd=root, env=ENV,
                             capture_output=True, text=True)
        exact = res.returncode == 0 and weights_equal(root / "kill-ref", run) and losses(root / "kill-ref") == losses(run)
        lost = res.returncode != 0 or not (run / "train_summary.json").exists() or not exact
        tb = ("Traceback (most recent call last)" in res.stderr) + 0
        trials.append({"aim": aim, "kill_after_s": round(at, 3), "last_checkpoint_step": step_at_kill,
                       "killed_inside_checkpoint_write": mid_write, "resume_exit": res.returncode, "exact": exact,
                       "lost": lost, "traceback_on_resume": bool(tb),
                       "last_stderr_line": (res.stderr.strip().splitlines() or [""])[-1][:300]})
        print(f"kill trial {i}: killed after {at:.2f} s (checkpoint {step_at_kill}, inside a write: {mid_write}); "
              f"resume exit {res.returncode}, exact {exact}", flush=True)
        shutil.rmtree(run, ignore_errors=True)
    return {"uninterrupted_wall_s": wall, "steps": steps, "trials": trials,
            "exact": sum(t["exact"] for t in trials), "lost": sum(t["lost"] for t in trials),
            "tracebacks": sum(t["traceback_on_resume"] for t in trials),
            "inside_checkpoint_write": sum(t["killed_inside_checkpoint_write"] for t in trials)}


def main():
    ap = parser(__doc__)
    ap.add_argument("--kills", type=int, default=20, help="kill -9 trials")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--kills-only", action="store_true", help="only the kill -9 trials")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="steerlab-faults-"))
    t0 = time.time()
    data = root / "particle-2d-40.zarr"
    subprocess.run([sys.executable, "-m", "steerlab.cli", "collect", "particle", "--episodes", "40", "--workers", "1",
                    "--out", str(data)], check=True, env=ENV, capture_output=True, cwd=root)
    cases = {}
    for fn in () if a.kills_only else (case_race, case_resume_changed, case_resume_corrupt, case_config_types, case_eval, case_noise,
               case_flipped):
        r = fn(data, root)
        cases[fn.__name__[5:]] = r
        print(f"{fn.__name__[5:]:18s} ok={r['ok']} tracebacks={r['tracebacks']} {r['checks']}", flush=True)
    if not a.kills_only:
        cases["demo_dims"] = case_demo_dims(root)
        print(f"demo_dims          ok={cases['demo_dims']['ok']} {cases['demo_dims']['checks']}", flush=True)
    for sig in () if a.kills_only else (signal.SIGINT, signal.SIGTERM):
        r = case_signal(data, root, sig)
        cases[signal.Signals(sig).name] = r
        print(f"{signal.Signals(sig).name:18s} ok={r['ok']} tracebacks={r['tracebacks']} {r['checks']}", flush=True)
    kills = kill_trials(data, root, a.kills, random.Random(a.seed))
    out = {"cases": cases, "kills": kills, "seconds": time.time() - t0, "machine": machine_brief(),
           "command": "python benchmarks/fault_injection.py" + (f" --kills {a.kills}" if a.kills != 20 else "")}
    path = save("fault_injection" + ("_kills" if a.kills_only else ""), out)
    print(f"kill -9: {kills['exact']}/{a.kills} exact resumes, {kills['lost']} lost, {kills['tracebacks']} tracebacks, "
          f"{kills['inside_checkpoint_write']} kills inside a checkpoint write; cases ok: "
          f"{sum(r['ok'] for r in cases.values())}/{len(cases)}; wrote {path}")
    if not a.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
