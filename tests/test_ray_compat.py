"""Ray and Optuna are used through their public APIs, except in imdb_ray/sweep/ray_compat.py, which is fenced
to the Ray version its workarounds were written for."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "imdb_ray"
COMPAT = PACKAGE / "sweep" / "ray_compat.py"


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
              and n.attr.startswith("_") and not n.attr.startswith("__") and n.attr not in own]
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


def test_a_stopped_trials_train_run_ends_as_stopped_and_a_crash_still_fails(ray_address, tmp_path):
    """Tune keeps a stopped trial's process for the next trial (reuse_actors) and tells it nothing:
    callbacks.kill_train_controllers kills that trial's Train controller by its name, its workers with it,
    and the fit() waiting in the process ends as stopped (TrainRunStopped, so the trial function returns and
    the process is free). Another trial's controller is left alone, and a controller that dies otherwise
    (here SIGKILLed) is still an error: Tune retries that trial."""
    import os
    import signal
    import threading
    import time

    import psutil
    import ray
    import ray.train

    from imdb_ray.sweep.callbacks import kill_train_controllers
    from imdb_ray.sweep.ray_compat import TrainRunStopped, killed_by_ray_kill, sweep_torch_trainer
    from imdb_ray.sweep.trial import controller_name, controller_prefix

    started = tmp_path / "worker.pid"

    def loop(config):
        started.write_text(str(os.getpid()))
        time.sleep(120)

    ray.init(address=ray_address, logging_level="ERROR")
    try:
        trainer = sweep_torch_trainer()(loop, scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 0.5}),
                                        run_config=ray.train.RunConfig(name="stopped", storage_path=str(tmp_path)))
        trainer.controller_name = controller_name("trial_a")
        ended = []
        fit = threading.Thread(target=lambda: ended.append(catch(trainer.fit)))
        fit.start()

        @ray.remote(num_cpus=0)
        class Sleeper:
            def pid(self) -> int:
                return os.getpid()

            def sleep(self) -> None:
                time.sleep(120)

        other = Sleeper.options(name=controller_name("trial_b")).remote()  # another trial's, by name
        crashed = Sleeper.remote()
        deadline = time.time() + 120
        while not started.exists():  # its worker training
            assert time.time() < deadline and fit.is_alive(), f"trial_a's worker never started: {ended}"
            time.sleep(0.2)
        assert kill_train_controllers(controller_prefix("trial_a")) == 1
        fit.join(30)
        assert not fit.is_alive() and isinstance(ended[0], TrainRunStopped), ended
        psutil.Process(int(started.read_text())).wait(30)  # the run's worker ends with it (else TimeoutExpired)
        assert ray.get(other.pid.remote())  # alive

        pid = ray.get(crashed.pid.remote())
        waiting = crashed.sleep.remote()
        os.kill(pid, signal.SIGKILL)
        crash = catch(lambda: ray.get(waiting))
        assert isinstance(crash, ray.exceptions.ActorDiedError) and not killed_by_ray_kill(crash)
    finally:
        ray.shutdown()


def catch(call) -> Exception | None:
    try:
        call()
    except Exception as error:  # noqa: BLE001 (the test looks at which)
        return error
    return None


def test_a_train_controller_imports_torch_beside_its_workers_start_not_before():
    """What a sweep trial's Train controller unpickles as it starts (the backend config, the train function in its
    context) imports no torch; reading `backend_cls`, as the controller's constructor does, starts torch's import in
    a thread; then Ray's own torch backend does the work (end to end: the 2-worker runs of test_ddp.py)."""
    import subprocess
    import sys

    import ray.cloudpickle
    import ray.train

    from imdb_ray.sweep.ray_compat import sweep_torch_trainer
    from imdb_ray.sweep.trial import train_worker

    trainer = sweep_torch_trainer()(train_worker, scaling_config=ray.train.ScalingConfig(num_workers=2))
    assert trainer.backend_config.backend == "gloo"  # TorchTrainer's default for CPU workers, kept
    shipped = ray.cloudpickle.dumps((trainer.backend_config, trainer._get_train_func()))
    controller = """if True:
        import sys, threading
        import ray.cloudpickle
        config, train_func = ray.cloudpickle.loads(sys.stdin.buffer.read())
        assert "torch" not in sys.modules, "unpickling imported torch"
        backend = config.backend_cls
        [importing] = [t for t in threading.enumerate() if t.name == "import torch.distributed"]
        importing.join(120)
        assert "torch.distributed" in sys.modules and backend().share_cuda_visible_devices
        from ray.train.torch.config import _TorchBackend
        from imdb_ray.sweep.ray_compat import torch_backend
        assert isinstance(torch_backend(), _TorchBackend) and config.to_dict()["backend"] == "gloo"
        print("ok")
    """
    done = subprocess.run([sys.executable, "-c", controller], input=shipped, capture_output=True, timeout=300)
    assert done.returncode == 0 and done.stdout.decode().strip() == "ok", done.stderr.decode()[-2000:]
