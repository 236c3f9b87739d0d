"""End-to-end Grain pipeline: shapes, masks, mixture, sharding, eval coverage, exact resume."""

import collections

import grain
import numpy as np
import orbax.checkpoint as ocp
import pipeline_fixtures as pf
import pytest

from jax_refvos.datasets import open_records
from jax_refvos.pipeline import element, image_ops, make_dataset


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("records")
    return {
        "ar": pf.write_dir(root, "a"),
        "tf": pf.write_dir(root, "b", fmt="tfrecord"),
        "ar2": pf.write_dir(root, "c", videos=4, shards=1),
    }


def take(ds, n):
    it = iter(ds)
    out = [next(it) for _ in range(n)]
    it.close()
    return out


def assert_batches_equal(xs, ys):
    assert len(xs) == len(ys)
    for x, y in zip(xs, ys, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def videos_by_key(path):
    return {element.stable_key(ex.dataset, ex.video_id): ex for ex in open_records(path)}


def test_virst_batch_shapes_valid_masks_and_gt(dirs):
    cfg = pf.tiny_cfg("virst", {"a": (dirs["ar"], 1.0)})
    exs = videos_by_key(dirs["ar"])
    for b in take(make_dataset(cfg), 3):
        assert b["vlm_frames"].shape == (2, 16, 32, 32, 3) and b["vlm_frames"].dtype == np.uint8
        assert b["sam_frames"].shape == (2, 8, 64, 64, 3) and b["masks"].shape == (2, 3, 8, 16, 16)
        assert b["input_ids"].shape == (2, 3, 160) and b["input_ids"].dtype == np.int32
        for i in range(2):
            ex = exs[int(b["video_key"][i])]
            nv = int(b["vlm_frame_valid"][i].sum())
            assert nv % 4 == 0 and nv >= 8 and b["vlm_frame_valid"][i, :nv].all()
            ns = int(b["sam_frame_valid"][i].sum())
            assert ns == min(8, nv)
            vlm_idx = b["vlm_frame_index"][i, :nv]
            sam_idx = b["sam_frame_index"][i, :ns]
            np.testing.assert_array_equal(vlm_idx[b["sam_to_vlm"][i, :ns]], sam_idx)
            assert b["expr_valid"][i].sum() == min(3, len(ex.expressions))
            for j in np.flatnonzero(b["expr_valid"][i]):
                expr = ex.expressions[int(b["exp_index"][i, j])]
                want = np.zeros((ns, 16, 16), bool)
                for track in expr.targets:
                    want |= image_ops.resize_masks(ex.track_masks(track, sam_idx), 16)
                np.testing.assert_array_equal(b["masks"][i, j, :ns], want)
                assert not b["masks"][i, j, ns:].any()
                assert (b["input_ids"][i, j] == 693).sum() == 10  # [SEG] of the synth tokenizer
                k = b["anchor_valid"][i, j].sum()
                assert (
                    k == min(3, ns) and b["window_valid"][i, j, b["anchor_index"][i, j, :k]].all()
                )
            np.testing.assert_array_equal(
                b["sam_frames"][i, 0],
                image_ops.sam_view(image_ops.decode_frames(ex, sam_idx[:1])[int(sam_idx[0])], 64),
            )


def test_glus_batch_shapes_and_keys(dirs):
    cfg = pf.tiny_cfg("glus", {"a": (dirs["ar"], 1.0)})
    exs = videos_by_key(dirs["ar"])
    for b in take(make_dataset(cfg), 3):
        assert b["vlm_frames"].shape == (2, 8, 24, 24, 3) and b["sam_frames"].shape == (
            2,
            4,
            64,
            64,
            3,
        )
        assert b["masks"].shape == (2, 3, 4, 16, 16) and b["seg_index"].shape == (2, 3, 4)
        for i in range(2):
            ex = exs[int(b["video_key"][i])]
            assert ex.num_frames >= 4  # the 3-frame video is filtered out, as GLUS does
            q = b["query_index"][i]
            np.testing.assert_array_equal(b["frame_index"][i, 4:], q)
            assert np.all(np.diff(q) == 1)
            for j in np.flatnonzero(b["expr_valid"][i]):
                expr = ex.expressions[int(b["exp_index"][i, j])]
                want = image_ops.resize_masks(expr.masks(q), 16)
                np.testing.assert_array_equal(b["masks"][i, j], want)
                assert b["obj_key"][i, j] == element.stable_key(
                    ex.dataset, ex.video_id, sorted(expr.object_ids)
                )
                assert (b["seg_index"][i, j] >= 0).all()


def test_same_seed_same_batches_other_seed_differs(dirs):
    cfg = pf.tiny_cfg("virst", {"a": (dirs["ar"], 1.0), "b": (dirs["tf"], 1.0)})
    assert_batches_equal(take(make_dataset(cfg), 3), take(make_dataset(cfg), 3))
    other = take(make_dataset(pf.tiny_cfg("virst", cfg.mixture, seed=1)), 3)
    assert any(
        not np.array_equal(x["vlm_frames"], y["vlm_frames"])
        for x, y in zip(take(make_dataset(cfg), 3), other, strict=True)
    )


def test_mixture_weights(dirs):
    cfg = pf.tiny_cfg(
        "virst",
        {"a": (dirs["ar"], 1.0), "c": (dirs["ar2"], 3.0)},
        batch_size=4,
        vlm_frames=8,
        sam_frames=4,
        sam_size=16,
        vlm_size=16,
        mask_size=8,
    )
    counts = collections.Counter()
    for b in take(make_dataset(cfg), 10):
        counts.update(b["dataset_index"].tolist())
    assert abs(counts[1] / 40 - 0.75) <= 0.1


@pytest.mark.parametrize("key", ["ar", "tf"])
def test_processes_disjoint_and_covering(dirs, key):
    seen = []
    for p in range(2):
        cfg = pf.tiny_cfg("virst", {"a": (dirs[key], 1.0)}, train=False, batch_size=3)
        got = set()
        for b in make_dataset(cfg, process_index=p, process_count=2):
            for i in np.flatnonzero(b["example_valid"]):
                got.add((int(b["video_key"][i]), int(b["exp_index"][i, 0])))
        seen.append(got)
    assert not seen[0] & seen[1]
    want = {
        (k, e) for k, ex in videos_by_key(dirs[key]).items() for e in range(len(ex.expressions))
    }
    assert seen[0] | seen[1] == want


def test_train_processes_disjoint_within_an_epoch(dirs):
    keys = []
    for p in range(2):
        cfg = pf.tiny_cfg("virst", {"a": (dirs["ar"], 1.0)}, batch_size=1)
        keys.append(
            {
                int(b["video_key"][0])
                for b in take(make_dataset(cfg, process_index=p, process_count=2), 3)
            }
        )
    assert not keys[0] & keys[1] and len(keys[0] | keys[1]) == 6


def test_eval_every_expression_once_padded(dirs):
    cfg = pf.tiny_cfg("glus", {"a": (dirs["ar"], 1.0)}, train=False, batch_size=4)
    batches = list(make_dataset(cfg))
    pairs = [
        (bytes(b["meta_video_id"][i]), bytes(b["meta_exp_id"][i]))
        for b in batches
        for i in np.flatnonzero(b["example_valid"])
    ]
    want = [
        (ex.video_id.encode(), e.exp_id.encode())
        for ex in open_records(dirs["ar"])
        for e in ex.expressions
    ]
    assert sorted(pairs) == sorted(want) and len(set(pairs)) == len(pairs)
    last = batches[-1]
    assert last["vlm_frames"].shape[0] == 4 and (~last["example_valid"]).sum() == 4 * len(
        batches
    ) - len(want)


@pytest.mark.parametrize("key", ["ar", "tf"])
@pytest.mark.parametrize("method", ["virst", "glus"])
def test_resume_exact_in_process(dirs, key, method):
    cfg = pf.tiny_cfg(method, {"a": (dirs[key], 1.0), "c": (dirs["ar2"], 0.5)})
    ds = make_dataset(cfg)
    it = iter(ds)
    for _ in range(2):
        next(it)
    state = it.get_state()
    want = [next(it) for _ in range(3)]
    it.close()
    it2 = iter(make_dataset(cfg))
    it2.set_state(state)
    assert_batches_equal([next(it2) for _ in range(3)], want)
    it2.close()


def test_orbax_round_trip_of_iterator_state(dirs, tmp_path):
    cfg = pf.tiny_cfg("virst", {"b": (dirs["tf"], 1.0)})
    it = iter(make_dataset(cfg))
    next(it)
    mngr = ocp.CheckpointManager(tmp_path / "ckpt")
    mngr.save(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
    want = [next(it) for _ in range(2)]
    it.close()
    it2 = iter(make_dataset(cfg))
    mngr.restore(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(it2)))
    assert_batches_equal([next(it2) for _ in range(2)], want)
    it2.close()
    mngr.close()
