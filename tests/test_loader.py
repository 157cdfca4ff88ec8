"""Rank / worker splitting of shards, equal batch counts, subsets, shuffling."""
import itertools

import pytest
import torch

from colorray.color import rgb_uint8_to_lab
from colorray.data.loader import ShardStream, make_loader, plan_epoch
from colorray.data.shards import read_manifest

UNEVEN = [{"name": f"s{i}", "count": n} for i, n in enumerate([100, 37, 64, 5, 1])]  # odd, one nearly empty


def _samples(shards, **kw):
    """{(rank, worker): [(shard, index), ...]} and {rank: batches} from the plan."""
    world, workers = kw.pop("world_size"), kw.pop("num_workers")
    seen, batches = {}, {}
    for rank, worker in itertools.product(range(world), range(workers)):
        pieces, n = plan_epoch(shards, rank=rank, world_size=world, worker=worker,
                               num_workers=workers, **kw)
        seen[rank, worker] = [(p.shard, i) for p in pieces for i in range(p.start, p.stop)]
        batches[rank] = batches.get(rank, 0) + n
    return seen, batches


@pytest.mark.parametrize("epoch", [0, 1, 2])
def test_two_ranks_two_workers_over_odd_uneven_shards_are_disjoint_and_equal(epoch):
    total = sum(s["count"] for s in UNEVEN)
    seen, batches = _samples(UNEVEN, batch_size=8, world_size=2, num_workers=2, epoch=epoch)
    flat = [s for v in seen.values() for s in v]
    assert len(flat) == len(set(flat))  # disjoint across ranks and workers
    assert total - len(flat) < 2 * 8  # covers the split, less what cannot fill a batch per rank
    assert batches[0] == batches[1] == len(flat) // 16
    for (rank, worker), s in seen.items():
        assert len(s) % 8 == 0  # workers cut whole batches


def test_without_drop_last_every_sample_is_seen_and_ranks_still_match():
    total = sum(s["count"] for s in UNEVEN)
    seen, batches = _samples(UNEVEN, batch_size=8, world_size=2, num_workers=2, drop_last=False)
    flat = [s for v in seen.values() for s in v]
    assert len(set(flat)) == total  # all covered; a few wrapped around as padding
    assert batches[0] == batches[1]


def test_epochs_shuffle_the_order_but_not_the_set():
    a, _ = _samples(UNEVEN, batch_size=8, world_size=1, num_workers=1, epoch=0)
    b, _ = _samples(UNEVEN, batch_size=8, world_size=1, num_workers=1, epoch=1)
    assert a[0, 0] != b[0, 0]
    assert set(a[0, 0]) <= {(s["name"], i) for s in UNEVEN for i in range(s["count"])}


def test_dataset_size_is_a_nested_prefix_subset():
    small, _ = _samples(UNEVEN, batch_size=1, world_size=1, num_workers=1, dataset_size=50, drop_last=False)
    big, _ = _samples(UNEVEN, batch_size=1, world_size=1, num_workers=1, dataset_size=120, drop_last=False)
    assert len(small[0, 0]) == 50 and len(big[0, 0]) == 120
    assert set(small[0, 0]) < set(big[0, 0])


def test_too_little_data_for_one_batch_per_rank_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot fill one batch"):
        plan_epoch([{"name": "s", "count": 10}], batch_size=8, world_size=2)


def _keys(folder, rank, world, **kw):
    loader = make_loader(folder, "train", 64, num_workers=2, rank=rank, world_size=world, **kw)
    keys, n = [], 0
    for batch in loader:
        assert batch["rgb"].dtype == torch.uint8 and batch["rgb"].shape[1:] == (64, 64, 3)
        assert len(batch["key"]) == len(batch["label"]) == len(batch["rgb"]) == 64
        keys += batch["key"]
        n += 1
    return keys, n, len(loader)


def test_real_shards_two_ranks_two_workers(skimage_shards, tmp_path):
    from colorray.config import DataParams
    from colorray.data.shards import write_shards

    # The embedded photos in raw records of a size that leaves an odd number of shards, the last
    # one partial (whatever the default shards' count happens to be).
    n = read_manifest(skimage_shards)["splits"]["train"]["count"]
    chunk = next(c for c in range(300, 2000) if n % c and (n // c + 1) % 2 == 1)
    folder = tmp_path / "shards"
    manifest = write_shards(DataParams(encoding="raw", compression="none", chunk_size=chunk, shard_max_mb=0.01),
                            skimage_shards.parent / "raw", folder, progress=False)
    shards = manifest["splits"]["train"]["shards"]
    assert len(shards) % 2 == 1 and shards[-1]["count"] < chunk  # an odd number of shards, the last one partial
    k0, n0, len0 = _keys(folder, 0, 2)
    k1, n1, len1 = _keys(folder, 1, 2)
    assert n0 == n1 == len0 == len1 > 0  # same number of batches on every rank
    assert not set(k0) & set(k1) and len(set(k0)) == len(k0)  # disjoint
    total = manifest["splits"]["train"]["count"]
    assert total - len(k0 + k1) < 2 * 64  # covering the split up to the per-rank remainder


def test_stream_batches_convert_to_lab(skimage_shards):
    stream = ShardStream(skimage_shards, "val", 32, shuffle=False, drop_last=False)
    batches = list(stream)
    assert sum(len(b["key"]) for b in batches) == read_manifest(skimage_shards)["splits"]["val"]["count"]
    L, ab = rgb_uint8_to_lab(batches[0]["rgb"])
    assert L.shape == (32, 1, 64, 64) and ab.shape == (32, 2, 64, 64)
    assert -1.0 <= L.min() and L.max() <= 1.0 and ab.abs().max() <= 1.0


def test_unknown_split_is_named(skimage_shards):
    with pytest.raises(KeyError, match="no split 'holdout'"):
        ShardStream(skimage_shards, "holdout", 8)


def test_each_pass_is_a_new_epoch_also_in_persistent_workers(skimage_shards):
    loader = make_loader(skimage_shards, "train", 64, num_workers=2)
    first = [k for b in loader for k in b["key"]]
    second = [k for b in loader for k in b["key"]]
    assert first != second and set(first) == set(second)
    resumed = make_loader(skimage_shards, "train", 64, num_workers=2)
    resumed.dataset.set_epoch(1)  # resuming at epoch 1 replays epoch 1's order
    assert [k for b in resumed for k in b["key"]] == second


def test_flip_mirrors_about_half_the_images_and_nothing_else(skimage_shards):
    """loader.flip: the same samples in the same order; each image either as stored or mirrored
    left-right, about half of them mirrored."""
    plain = next(iter(make_loader(skimage_shards, "train", 256, num_workers=0, seed=5)))
    flipped = next(iter(make_loader(skimage_shards, "train", 256, num_workers=0, seed=5, flip=True)))
    assert plain["key"] == flipped["key"]
    same = [torch.equal(a, b) for a, b in zip(plain["rgb"], flipped["rgb"])]
    mirrored = [torch.equal(a.flip(1), b) for a, b in zip(plain["rgb"], flipped["rgb"])]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 0.35 < sum(m and not s for s, m in zip(same, mirrored)) / len(same) < 0.65
