"""Two `refvos train` processes on localhost (CPU, gloo) train exactly as one process with the
same global batch (issue 8): the global batches, the mesh and the losses are the same."""

import subprocess

import portpicker
from train_runs import REPO, losses, run_train, train_cmd, train_env

STEPS = 3


def test_two_processes_equal_one_process(tmp_path):
    data = tmp_path / "data"
    arg = f"variant=tiny,steps={STEPS},log_every=1,ckpt_every={STEPS},synth=tiny,data_dir={data}"
    # One process, 2 devices, 4 videos per step (it also creates the synthetic data).
    run_train(f"{arg},batch=4", tmp_path / "one", devices=2)
    # Two processes, 1 device and 2 videos each: the same global batch of 4 on the same mesh.
    port = portpicker.pick_unused_port()
    procs = [
        subprocess.Popen(
            train_cmd(
                f"{arg},batch=2",
                tmp_path / "two",
                "--coordinator_address",
                f"127.0.0.1:{port}",
                "--num_processes",
                "2",
                "--process_id",
                str(i),
            ),
            env=train_env(1),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert sorted(one) == sorted(two) == list(range(1, STEPS + 1))
    rel = [abs(one[s] - two[s]) / abs(one[s]) for s in one]
    print("1 process", one, "\n2 processes", two, "\nrelative", rel)
    assert max(rel) <= 1e-5, rel
    # Both processes wrote their Grain iterator position into the one collective checkpoint.
    it = tmp_path / "two" / "checkpoints" / str(STEPS) / "data_iter"
    names = {p.name for p in it.iterdir()}
    assert {"process_0-of-2.json", "process_1-of-2.json"} <= names, names
