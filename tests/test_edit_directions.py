"""Linear AU directions: construction, apply (relative, absolute, masks, layers), files, conditional."""

from __future__ import annotations

import pytest
import torch

from stylerig_au.au.vocab import AU_NUMBERS
from stylerig_au.edit import AU, LinearDirections, conditional
from stylerig_au.errors import StylerigError
from stylerig_au.models.protocol import StyleSlot

W_DIM = 16
# 6 slots: 0-1 coarse, 2-3 middle (3 unused), 4-5 fine
SLOTS = (StyleSlot(0, 4, "coarse"), StyleSlot(1, 8, "coarse"), StyleSlot(2, 16, "middle"),
         StyleSlot(3, 0, "middle", used=False), StyleSlot(4, 64, "fine"), StyleSlot(5, 128, "fine"))


def make_dirs(seed: int = 0, **kwargs) -> LinearDirections:
    g = torch.Generator().manual_seed(seed)
    dirs = {au: torch.randn(W_DIM, generator=g) for au in (4, 6, 12)}
    kwargs.setdefault("masks", {12: torch.tensor([0, 0, 1, 1, 1, 0], dtype=torch.bool),
                                6: torch.tensor([0.0, 0.5, 1.0, 1.0, 0.0, 0.0])})
    kwargs.setdefault("scales", {12: 2.0, 6: 0.5})
    return LinearDirections(dirs, slots=SLOTS, generator="toy", **kwargs)


def random_ws(n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, len(SLOTS), W_DIM, generator=torch.Generator().manual_seed(seed))


def test_construction_normalises_and_masks_unused_slots():
    d = make_dirs()
    assert d.aus == (4, 6, 12) and d.w_dim == W_DIM and d.num_ws == 6
    assert torch.allclose(d.directions.norm(dim=1), torch.ones(3))
    assert d.mask(12).tolist() == [0, 0, 1, 0, 1, 0]  # slot 3 is unused
    assert d.mask(4).tolist() == [1, 1, 1, 0, 1, 1]  # default: every used slot
    assert d.scale(12) == 2.0 and d.scale(4) == 1.0
    with pytest.raises(StylerigError, match="zero"):
        LinearDirections({12: torch.zeros(W_DIM)}, slots=SLOTS, generator="toy")
    with pytest.raises(StylerigError, match="slot mask"):
        LinearDirections({12: torch.ones(W_DIM)}, slots=SLOTS, generator="toy", masks={12: torch.ones(4)})
    with pytest.raises(StylerigError, match="positive"):
        LinearDirections({12: torch.ones(W_DIM)}, slots=SLOTS, generator="toy", scales={12: -1.0})
    with pytest.raises(StylerigError, match="valid AUs"):
        LinearDirections({13: torch.ones(W_DIM)}, slots=SLOTS, generator="toy")


def test_relative_edit_moves_only_masked_slots():
    d, ws = make_dirs(), random_ws()
    out = d.apply(ws, AU(12, +2))
    expected = ws[:, 2] + 2 * 2.0 * d.direction(12)
    assert torch.allclose(out[:, 2], expected) and torch.allclose(out[:, 4], ws[:, 4] + 4.0 * d.direction(12))
    for slot in (0, 1, 3, 5):  # unmasked or unused: bit-identical
        assert torch.equal(out[:, slot], ws[:, slot])
    soft = d.apply(ws, AU(6, +1))
    assert torch.allclose(soft[:, 1], ws[:, 1] + 0.5 * 0.5 * d.direction(6))
    assert torch.equal(soft[:, 3], ws[:, 3]) and torch.equal(soft[:, 0], ws[:, 0])
    assert not torch.equal(out, ws)  # the input is not modified in place
    assert torch.equal(ws, random_ws())


def test_edit_is_linear_and_composes():
    d, ws = make_dirs(), random_ws()
    both = d.apply(ws, AU(12, 1) + AU(6, -2))
    seq = d.apply(d.apply(ws, AU(12, 1)), AU(6, -2))
    assert torch.allclose(both, seq, atol=1e-6)
    half = d.apply(ws, 0.5 * AU(12, 2))
    assert torch.allclose(half, d.apply(ws, AU(12, 1)))
    back = d.apply(d.apply(ws, AU(12, 2)), -AU(12, 2))
    assert torch.allclose(back, ws, atol=1e-5)


def test_single_latent_shape_and_dtype():
    d, ws = make_dirs(), random_ws(1)[0].double()
    out = d.apply(ws, AU(4, 1))
    assert out.shape == ws.shape and out.dtype == torch.float64
    with pytest.raises(StylerigError, match=r"expected ws of shape"):
        d.apply(torch.zeros(2, 5, W_DIM), AU(4, 1))


def test_layer_restriction_intersects_with_au_mask():
    d, ws = make_dirs(), random_ws()
    out = d.apply(ws, AU(12, 2).only_layers("fine"))  # AU12 mask {2, 4} & fine {4, 5} -> {4}
    changed = [s for s in range(6) if not torch.equal(out[:, s], ws[:, s])]
    assert changed == [4]
    nothing = d.apply(ws, AU(12, 2).only_layers("coarse"))  # empty intersection
    assert torch.equal(nothing, ws)
    unused = d.apply(ws, AU(4, 2).only_layers(3))  # unused slot never moves
    assert torch.equal(unused, ws)


def test_unknown_au_in_edit():
    with pytest.raises(StylerigError, match="no direction for AU1 .*4, 6, 12"):
        make_dirs().apply(random_ws(), AU(1, 1))


def test_absolute_targets_need_current_aus():
    d, ws = make_dirs(), random_ws(2)
    with pytest.raises(StylerigError, match="current AU intensities"):
        d.apply(ws, AU(12, to=3.0))
    as_dict = d.apply(ws, AU(12, to=3.0), current_aus={"AU12": torch.tensor([1.0, 4.0])})
    assert torch.allclose(as_dict[0], d.apply(ws[:1], AU(12, +2.0))[0])
    assert torch.allclose(as_dict[1], d.apply(ws[1:], AU(12, -1.0))[0])
    table = torch.zeros(2, len(AU_NUMBERS))
    table[:, AU_NUMBERS.index(12)] = torch.tensor([1.0, 4.0])
    assert torch.equal(d.apply(ws, AU(12, to=3.0), current_aus=table), as_dict)
    scalar = d.apply(ws, AU(12, to=3.0), current_aus={12: 1.0})
    assert torch.allclose(scalar, d.apply(ws, AU(12, 2.0)))
    with pytest.raises(StylerigError, match="has no AU12"):
        d.apply(ws, AU(12, to=3.0), current_aus={6: 1.0})
    with pytest.raises(StylerigError, match="3 values"):
        d.apply(ws, AU(12, to=3.0), current_aus={12: torch.ones(3)})
    with pytest.raises(StylerigError, match="current_aus tensor"):
        d.apply(ws, AU(12, to=3.0), current_aus=torch.zeros(2, 5))


def test_save_load_round_trip(tmp_path):
    d = make_dirs(method="test", meta={"samples": 10})
    path = d.save(tmp_path / "dirs.pt")
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]
    e = LinearDirections.load(path)
    assert e.aus == d.aus and e.slots == d.slots and e.generator == "toy"
    assert torch.equal(e.directions, d.directions) and torch.equal(e.slot_masks, d.slot_masks)
    assert torch.equal(e.scales, d.scales) and e.method == "test" and e.meta == {"samples": 10} and e.created == d.created
    ws = random_ws()
    assert torch.equal(e.apply(ws, AU(12, 2) + AU(6, 1)), d.apply(ws, AU(12, 2) + AU(6, 1)))


class _FakeG:
    def __init__(self, name: str, num_ws: int, w_dim: int) -> None:
        self.name, self.num_ws, self.w_dim = name, num_ws, w_dim


def test_load_mismatch_and_bad_files(tmp_path):
    path = make_dirs().save(tmp_path / "dirs.pt")
    assert LinearDirections.load(path, _FakeG("toy", 6, W_DIM)).aus == (4, 6, 12)
    for fake in (_FakeG("other", 6, W_DIM), _FakeG("toy", 8, W_DIM), _FakeG("toy", 6, 32)):
        with pytest.raises(StylerigError, match="are for 'toy'") as err:
            LinearDirections.load(path, fake)
        assert "\n" not in str(err.value)
    with pytest.raises(StylerigError, match="no such directions file"):
        LinearDirections.load(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not torch")
    with pytest.raises(StylerigError, match="not a stylerig-au directions file"):
        LinearDirections.load(tmp_path / "junk.pt")
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(StylerigError, match="not a stylerig-au directions file"):
        LinearDirections.load(tmp_path / "other.pt")
    blob = make_dirs().to_dict()
    blob["format_version"] = 99
    torch.save(blob, tmp_path / "newer.pt")
    with pytest.raises(StylerigError, match="newer"):
        LinearDirections.load(tmp_path / "newer.pt")


def test_conditional_is_orthogonal_to_kept_directions():
    d = make_dirs()
    nuisance = torch.randn(2, W_DIM, generator=torch.Generator().manual_seed(5))
    c = conditional(d, keep=[4, 6, nuisance], aus=[12])
    d12 = c.direction(12).double()
    assert abs(float(d12 @ d.direction(4).double())) < 1e-6
    assert abs(float(d12 @ d.direction(6).double())) < 1e-6
    assert (nuisance.double() @ d12).abs().max() < 1e-6
    assert abs(float(d12.norm()) - 1) < 1e-6
    assert torch.equal(c.direction(4), d.direction(4))  # not among the conditioned AUs
    # one intensity unit along the new direction moves the original AU12 readout by one unit
    readout = float(d12 @ d.direction(12).double()) * c.scale(12) / d.scale(12)
    assert abs(readout - 1.0) < 1e-5
    assert torch.equal(c.mask(12), d.mask(12)) and "conditional" in c.method


def test_conditional_all_against_all_and_degenerate():
    d = make_dirs()
    c = conditional(d)  # keep=None: every AU against every other AU
    for a in d.aus:
        for b in d.aus:
            if a != b:
                assert abs(float(c.direction(a).double() @ d.direction(b).double())) < 1e-6
    with pytest.raises(StylerigError, match="lies in the span"):
        conditional(d, keep=[d.direction(12)], aus=[12])
    with pytest.raises(StylerigError, match="no direction for AU1"):
        conditional(d, keep=[1])
