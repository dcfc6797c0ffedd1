"""Ray and Optuna are used through their public APIs, except in imdb_ray/sweep/ray_compat.py, which is fenced
to the Ray version its workarounds were written for."""
from __future__ import annotations

import ast
import signal
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "imdb_ray"
COMPAT = PACKAGE / "sweep" / "ray_compat.py"
DOCUMENTED = {("os", "_exit")}  # underscored names that are their library's documented API


def private_uses(path: Path) -> list[str]:
    """Imports of a private Ray/Optuna module or name, and, in a module that imports Ray or Optuna, reads of a
    private attribute (`x._name`) that the module does not define itself (a base class's internals)."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("ray", "optuna"):
            private = [a.name for a in node.names if a.name.startswith("_")]
            if any(part.startswith("_") for part in node.module.split(".")) or private:
                found.append(f"from {node.module} import {', '.join(a.name for a in node.names)}")
        elif isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names
                      if a.name.split(".")[0] in ("ray", "optuna") and any(p.startswith("_") for p in a.name.split("."))]
    if not any(isinstance(n, (ast.Import, ast.ImportFrom)) and any(m.split(".")[0] in ("ray", "optuna") for m in
               ([n.module or ""] if isinstance(n, ast.ImportFrom) else [a.name for a in n.names])) for n in ast.walk(tree)):
        return found
    own = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    own |= {t.attr for n in ast.walk(tree) if isinstance(n, (ast.Assign, ast.AnnAssign, ast.AugAssign))
            for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Attribute)}
    found += [f"._{n.attr[1:]} (line {n.lineno})" for n in ast.walk(tree) if isinstance(n, ast.Attribute)
              and n.attr.startswith("_") and not n.attr.startswith("__") and n.attr not in own
              and (getattr(n.value, "id", None), n.attr) not in DOCUMENTED]
    return found


def test_ray_internals_are_fenced_to_the_ray_version_they_were_written_for():
    """Fails on another Ray: read ray_compat.py (is each workaround still needed, does each name still exist?),
    then move RAY_VERSION."""
    import ray

    from imdb_ray.sweep import ray_compat

    assert ray.__version__.startswith(ray_compat.RAY_VERSION + "."), (ray.__version__, ray_compat.RAY_VERSION)
    assert private_uses(COMPAT), "ray_compat.py holds the internals: the scan below must see them"
    ray_compat.training_result_type(), ray_compat.sweep_torch_trainer(), ray_compat.function_trainable(lambda c: None)


def test_no_module_but_ray_compat_reaches_into_ray_or_optuna():
    found = {str(p.relative_to(PACKAGE.parent)): uses for p in sorted(PACKAGE.rglob("*.py"))
             if p != COMPAT and (uses := private_uses(p))}
    assert not found, found


def test_the_scan_sees_a_private_read():
    planted = PACKAGE.parent / "tests" / "_planted_private.py"
    planted.write_text("import optuna\nfrom ray.train._internal.session import _TrainingResult\n\ndef f(s):\n    return s._ot_study\n")
    try:
        assert len(private_uses(planted)) == 2
    finally:
        planted.unlink()


def test_cluster_address_resolves_auto_as_ray_init_does(monkeypatch):
    """`auto` reads RAY_ADDRESS first (as ray.init does); an address given in full is only normalised."""
    from imdb_ray.sweep.ray_compat import cluster_address

    monkeypatch.setenv("RAY_ADDRESS", "10.1.2.3:6379")
    assert cluster_address("auto") == "10.1.2.3:6379"
    assert cluster_address("10.9.8.7:6380") == "10.9.8.7:6380"


def test_a_local_ray_is_stopped_with_its_monitor_killed_first_and_no_process_left():
    """shutdown_ray: the local Ray's autoscaler monitor, a process Ray 2.60 tracks (the workaround's target is still
    there), gets SIGKILL before ray.shutdown stops the GCS, so its SIGTERM handler never waits on a dead GCS; every
    process of that Ray is gone afterwards. In a process of its own: pytest's has joined the test cluster."""
    script = (
        "from ray._private import worker\n"
        "from imdb_ray.sweep import ray_compat, runner\n"
        "runner._start_ray(None, dashboard=False)\n"
        "node = worker._global_node\n"
        "processes = [info.process for infos in node.all_processes.values() for info in infos]\n"
        "monitor = node.all_processes['monitor'][0].process\n"
        "import ray\n"
        "stop = ray.shutdown\n"
        "ray.shutdown = lambda: (print(monitor.poll()), stop())  # the monitor's state as Ray's own stop begins\n"
        "ray_compat.shutdown_ray()\n"
        "print(len(processes), sum(p.poll() is None for p in processes))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    killed_before, started, alive = proc.stdout.split()[-3:]  # plain ray.shutdown: None (still running), then -9
    assert killed_before == str(-signal.SIGKILL) and int(started) >= 4 and alive == "0", proc.stdout


def test_a_train_run_stopped_in_its_report_ends_its_workers_and_a_dead_trial_process_takes_its_run_along(ray_address, tmp_path):
    """The Train controller runs in the trial's process (ray_compat.run_controller_in_process; here an actor stands
    for Tune's). Tune stops a trial on a result, while the controller waits in that result's report; when Tune ends
    the trial's thread, the report raises SystemExit: the run's worker and placement group are then ended, and fit()
    ends with the SystemExit (so does the trial's thread, as Tune expects). And a trial's process that dies (Tune
    ends it at a sweep's end, or it crashes) takes its run's worker along, not its placement group (Ray frees that
    with the sweep's driver): callbacks.EndStoppedTrainRuns removes it."""
    import time

    import psutil
    import ray
    from ray.util.placement_group import PlacementGroup, placement_group_table

    from imdb_ray.sweep.callbacks import release_placement_groups

    ray.init(address=ray_address, logging_level="ERROR")
    try:
        def run_of(name: str) -> tuple[psutil.Process, PlacementGroup]:
            deadline = time.time() + 120
            while not (tmp_path / f"{name}.run").exists():
                assert time.time() < deadline, f"{name}'s worker never reported"
                time.sleep(0.2)
            pid, group = (tmp_path / f"{name}.run").read_text().split()
            return psutil.Process(int(pid)), PlacementGroup(ray.PlacementGroupID(bytes.fromhex(group)))

        TrialProcess = trial_process_actor()
        stopped = TrialProcess.remote(str(tmp_path), "stopped")
        worker, group = run_of("stopped")
        (tmp_path / "tune-ended-stopped").write_text("")
        assert ray.get(stopped.outcome.remote(), timeout=60) == "SystemExit"
        worker.wait(30)  # the run's worker has ended (else TimeoutExpired)
        assert placement_group_table(group)["state"] == "REMOVED"

        owner = TrialProcess.remote(str(tmp_path), "owned")
        worker, group = run_of("owned")
        ray.kill(owner)
        worker.wait(30)
        time.sleep(2)
        assert placement_group_table(group)["state"] == "CREATED"  # Ray keeps it until the sweep's driver ends, so
        assert release_placement_groups([group.id.hex()]) == 1  # callbacks.EndStoppedTrainRuns removes it
        assert placement_group_table(group)["state"] == "REMOVED"
    finally:
        ray.shutdown()


def trial_process_actor() -> type:
    """An actor that stands for Tune's trial process: it runs a SweepTorchTrainer's fit() in a thread, as Tune runs
    a trial function, its train function reporting once and then training on; its callback stands for Tune's report."""
    import os
    import threading
    import time
    from pathlib import Path

    import ray
    import ray.train

    from imdb_ray.sweep.ray_compat import sweep_torch_trainer

    def loop(config):
        group = ray.util.get_current_placement_group().id.hex()
        ray.train.report({"epoch": 1})
        (Path(config["folder"]) / f"{config['name']}.run").write_text(f"{os.getpid()} {group}")
        time.sleep(120)  # the run would go on training

    class TuneStops(ray.train.UserCallback):  # what Tune's report does once Tune ends a stopped trial's thread
        def __init__(self, folder: str, name: str):
            self.ended = Path(folder) / f"tune-ended-{name}"  # this run's own: another run's must not end it

        def after_report(self, run_context, metrics, checkpoint):
            while not self.ended.exists():
                time.sleep(0.1)
            raise SystemExit(0)

    @ray.remote(num_cpus=0)
    class TrialProcess:
        def __init__(self, folder: str, name: str):
            trainer = sweep_torch_trainer()(
                loop, train_loop_config={"folder": folder, "name": name},
                run_config=ray.train.RunConfig(name=name, storage_path=folder, callbacks=[TuneStops(folder, name)]),
                scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 0.5}))
            self.ended = None
            self.thread = threading.Thread(target=self.fit, args=(trainer,), daemon=True)
            self.thread.start()

        def fit(self, trainer) -> None:
            try:
                trainer.fit()
            except BaseException as error:  # noqa: BLE001 (the test looks at which)
                self.ended = type(error).__name__

        def outcome(self) -> str | None:
            self.thread.join()
            return self.ended

    return TrialProcess
