"""ndt_fast.layers: automatic layer selection, output selection and the reshape rules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ndt_fast import FastTracker
from ndt_fast.layers import MAX_LAYERS, activation_matrix, auto_select_layers, default_layer_names, first_tensor

torchvision = pytest.importorskip("torchvision")


pytestmark = pytest.mark.usefixtures("torch_env")


def same_modules(got: list[nn.Module], want: list[nn.Module]) -> bool:
    return len(got) == len(want) and all(a is b for a, b in zip(got, want))


def names_of(model: nn.Module, modules: list[nn.Module]) -> list[str]:
    lookup = {id(m): name for name, m in model.named_modules()}
    return [lookup[id(m)] for m in modules]


# ---------------------------------------------------------------------------------------------
# auto_select_layers


def test_mlp_selects_every_linear():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Dropout(), nn.Linear(16, 3))
    assert same_modules(auto_select_layers(model), [model[0], model[2], model[5]])


def test_plain_cnn_selects_convs_and_linears():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 10),
    )
    assert same_modules(auto_select_layers(model), [model[0], model[3], model[7], model[9]])


def test_conv1d_and_conv3d_are_candidates():
    model = nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(), nn.Conv1d(4, 4, 3), nn.Flatten(), nn.Linear(8, 2))
    assert same_modules(auto_select_layers(model), [model[0], model[2], model[4]])
    model3 = nn.Sequential(nn.Conv3d(1, 2, 2), nn.Flatten(), nn.Linear(2, 2))
    assert same_modules(auto_select_layers(model3), [model3[0], model3[2]])


def test_resnet18_selects_its_eight_basic_blocks_and_fc():
    model = torchvision.models.resnet18()
    selected = auto_select_layers(model)
    blocks = [block for stage in (model.layer1, model.layer2, model.layer3, model.layer4) for block in stage]
    assert len(blocks) == 8
    assert same_modules(selected, blocks + [model.fc]), names_of(model, selected)
    assert all(type(m).__name__ == "BasicBlock" for m in selected[:8])
    # the tracker tracks them, with ndt's names, and a small forward records every one
    tracker = FastTracker(model, sampling_frequency=1)
    assert tracker.layer_names == [f"BasicBlock_{i}" for i in range(8)] + ["Linear_8"]
    model(torch.randn(2, 3, 32, 32))
    tracker.log(0, 0.0)
    tracker.close()
    results = tracker.get_results()
    assert all(len(df) == 1 for df in results.values())
    assert tracker.errors == dict.fromkeys(tracker.layer_names, 0)
    # a BasicBlock output is 4-D: one row per image (ndt's rule)
    assert int(results["BasicBlock_0"]["rows"].iloc[0]) == 2


class EncoderModel(nn.Module):
    def __init__(self, d: int = 16, layers: int = 3) -> None:
        super().__init__()
        self.embed = nn.Linear(6, d)
        layer = nn.TransformerEncoderLayer(d, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, 4)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x)))


def test_transformer_encoder_selects_its_layers_and_head():
    model = EncoderModel()
    selected = auto_select_layers(model)
    assert same_modules(selected, list(model.encoder.layers) + [model.head]), names_of(model, selected)
    tracker = FastTracker(model, sampling_frequency=1)
    model(torch.randn(2, 5, 6))
    tracker.log(0, 0.0)
    tracker.close()
    results = tracker.get_results()
    assert list(results) == [f"TransformerEncoderLayer_{i}" for i in range(3)] + ["Linear_3"]
    # (batch, seq, hidden) outputs: one row per token
    assert [int(df["rows"].iloc[0]) for df in results.values()] == [10, 10, 10, 10]


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, 2, batch_first=True)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, vocab: int = 50, d: int = 16, n_layers: int = 4) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(32, d)
        self.blocks = nn.ModuleList(Block(d) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def test_gpt_style_model_selects_blocks_and_lm_head():
    model = GPT()
    selected = auto_select_layers(model)
    assert same_modules(selected, list(model.blocks) + [model.lm_head]), names_of(model, selected)
    tracker = FastTracker(model, sampling_frequency=1)
    model(torch.randint(0, 50, (3, 7)))
    tracker.log(0, 0.0)
    tracker.close()
    results = tracker.get_results()
    assert list(results) == [f"Block_{i}" for i in range(4)] + ["Linear_4"]
    assert [int(df["rows"].iloc[0]) for df in results.values()] == [21] * 5


def test_vit_b_16_selects_twelve_encoder_blocks_and_head():
    model = torchvision.models.vit_b_16()
    selected = auto_select_layers(model)
    assert same_modules(selected, list(model.encoder.layers) + [model.heads.head]), names_of(model, selected)
    assert [type(m).__name__ for m in selected] == ["EncoderBlock"] * 12 + ["Linear"]
    # one forward (batch 1, 224x224): 197 tokens per block, one row for the head
    tracker = FastTracker(model, sampling_frequency=1, skip_eval_forwards=False)
    with torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    tracker.log(0, 0.0)
    tracker.close()
    results = tracker.get_results()
    assert [int(df["rows"].iloc[0]) for df in results.values()] == [197] * 12 + [1]
    assert tracker.errors == dict.fromkeys(tracker.layer_names, 0)


def test_mlp_cap_keeps_32_evenly_spaced_first_and_last():
    linears = [nn.Linear(4, 4) for _ in range(45)]
    model = nn.Sequential(*linears)
    selected = auto_select_layers(model)
    assert len(selected) == MAX_LAYERS == 32
    assert selected[0] is linears[0] and selected[-1] is linears[-1]
    index = [next(i for i, m in enumerate(linears) if m is s) for s in selected]
    assert index == sorted(set(index)), "in model order, no duplicates"
    gaps = {b - a for a, b in zip(index, index[1:])}
    assert gaps <= {1, 2}, f"evenly spaced: gaps {gaps}"
    # max_layers as an argument
    few = auto_select_layers(model, max_layers=5)
    assert same_modules(few, [linears[i] for i in (0, 11, 22, 33, 44)])
    # at or under the cap: everything
    assert same_modules(auto_select_layers(nn.Sequential(*linears[:32])), linears[:32])


def test_block_cap_keeps_first_and_last_block_plus_head():
    model = GPT(n_layers=40, d=8)
    selected = auto_select_layers(model)
    assert len(selected) == 32
    assert selected[-1] is model.lm_head
    blocks = list(model.blocks)
    assert selected[0] is blocks[0] and selected[-2] is blocks[-1]
    index = [next(i for i, b in enumerate(blocks) if b is s) for s in selected[:-1]]
    assert index == sorted(set(index)) and len(index) == 31


def test_default_layer_names_follow_ndt():
    layers = [nn.Linear(2, 2), nn.Conv2d(1, 1, 1), nn.Linear(2, 2)]
    assert default_layer_names(layers) == ["Linear_0", "Conv2d_1", "Linear_2"]


# ---------------------------------------------------------------------------------------------
# activation_matrix


def test_activation_matrix_2d_is_a_detached_view():
    x = torch.randn(5, 7, requires_grad=True)
    m = activation_matrix(x)
    assert m.shape == (5, 7) and not m.requires_grad
    assert m.data_ptr() == x.data_ptr()
    assert torch.equal(m, x.detach())


def test_activation_matrix_2d_strided_view_kept():
    x = torch.randn(7, 5).t()  # a transposed (column-major) view
    m = activation_matrix(x)
    assert torch.equal(m, x) and m.data_ptr() == x.data_ptr()


def test_activation_matrix_3d_tokens_as_rows():
    x = torch.randn(2, 5, 6)
    m = activation_matrix(x)
    assert m.shape == (10, 6)
    assert torch.equal(m[7], x[1, 2])
    assert m.data_ptr() == x.data_ptr(), "no copy for a contiguous 3-D output"


@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (2, 3, 2, 4, 5)])
def test_activation_matrix_4d_and_higher_flatten_per_sample(shape):
    x = torch.randn(*shape)
    m = activation_matrix(x)
    assert m.shape == (shape[0], x[0].numel())
    assert torch.equal(m, x.reshape(shape[0], -1))


def test_activation_matrix_channels_last_in_logical_order():
    x = torch.randn(3, 4, 5, 6)
    cl = x.contiguous(memory_format=torch.channels_last)
    assert not cl.is_contiguous()
    assert torch.equal(activation_matrix(cl), x.reshape(3, -1))
    assert torch.equal(activation_matrix(cl, spatial_rows=True), x.permute(0, 2, 3, 1).reshape(-1, 4))


def test_activation_matrix_1d_and_0d():
    x = torch.randn(6)
    m = activation_matrix(x)
    assert m.shape == (6, 1) and torch.equal(m[:, 0], x)
    with pytest.raises(ValueError):
        activation_matrix(torch.tensor(1.0))


def test_activation_matrix_spatial_rows():
    x3 = torch.randn(2, 3, 5)  # Conv1d (batch, C, L)
    m3 = activation_matrix(x3, spatial_rows=True)
    assert m3.shape == (10, 3)
    assert torch.equal(m3, x3.permute(0, 2, 1).reshape(-1, 3))
    assert torch.equal(m3[6], x3[1, :, 1])
    x4 = torch.randn(2, 3, 4, 5)
    m4 = activation_matrix(x4, spatial_rows=True)
    assert torch.equal(m4, x4.permute(0, 2, 3, 1).reshape(-1, 3))
    x5 = torch.randn(2, 3, 2, 2, 2)
    assert torch.equal(activation_matrix(x5, spatial_rows=True), x5.permute(0, 2, 3, 4, 1).reshape(-1, 3))
    # without spatial_rows the same 3-D output follows ndt's (batch·C, L) rule
    assert torch.equal(activation_matrix(x3), x3.reshape(6, 5))


# ---------------------------------------------------------------------------------------------
# first_tensor


class HasToTuple:
    def __init__(self, *items) -> None:
        self.items = items

    def to_tuple(self):
        return self.items


def test_first_tensor_nested_outputs():
    a, b = torch.randn(2), torch.randn(3)
    assert first_tensor(a) is a
    assert first_tensor((a, b)) is a
    assert first_tensor([None, 3, "text", b, a]) is b
    assert first_tensor((None, [None, (b,)], a)) is b  # depth-first
    assert first_tensor({"loss": None, "logits": b, "hidden": a}) is b
    assert first_tensor(({"x": None}, {"y": [a]})) is a
    assert first_tensor(HasToTuple(None, b, a)) is b
    assert first_tensor((HasToTuple(None), HasToTuple(a))) is a


def test_first_tensor_none_when_no_tensor():
    assert first_tensor(None) is None
    assert first_tensor((1, 2.0, "s")) is None
    assert first_tensor({"a": None, "b": [None]}) is None
    assert first_tensor(HasToTuple()) is None
