"""DimensionalityCallback in a real Hugging Face Trainer run on the CPU (a 2-layer GPT-2 built from
a config; nothing downloaded): the TensorBoard events it writes equal the tracker's results, the
loss under gradient accumulation equals the Trainer's own, nothing stays hooked, a run resumed
from a checkpoint continues the run file without a step twice, and the default layers of GPT-2/Llama/BERT/ViT-style models are their blocks."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.util import tensor_util  # noqa: E402

import ndt_fast  # noqa: E402
from ndt_fast.integrations.transformers import DimensionalityCallback, hf_layers  # noqa: E402
from models import VOCAB, Tokens, tiny_gpt2  # noqa: E402
from ndt_fast.sinks import DEFAULT_METRICS  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_env")

def test_trainer_run_reaches_tensorboard_value_for_value(tmp_path):
    model = tiny_gpt2()
    hooks_before = {name: len(m._forward_hooks) for name, m in model.named_modules()}
    callback = DimensionalityCallback(sampling_frequency=4)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, gradient_accumulation_steps=2, max_steps=40,
        logging_steps=1, report_to=["tensorboard"], save_strategy="no", use_cpu=True, disable_tqdm=True,
        learning_rate=1e-3, dataloader_num_workers=0)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Tokens(400), callbacks=[callback])
    trainer.train()

    results = callback.tracker.get_results()
    assert list(results) == ["GPT2Block_0", "GPT2Block_1"]  # the blocks; the vocabulary-wide head left out
    expected_steps = list(range(4, 41, 4))
    events = EventAccumulator(str(tmp_path / "runs" / "ndt_fast"), size_guidance={"tensors": 0})
    events.Reload()
    for layer, df in results.items():
        assert df["step"].tolist() == expected_steps
        for metric in DEFAULT_METRICS:
            written = events.Tensors(f"ndt/{layer}/{metric}")
            assert [e.step for e in written] == expected_steps
            values = [float(tensor_util.make_ndarray(e.tensor_proto)) for e in written]
            np.testing.assert_array_equal(values, df[metric].to_numpy(np.float64))  # float64: exact
    # The loss of each sampled step (mean over its 2 micro-batches) is the Trainer's own, which it
    # logs per step here (rounded to 4 digits).
    logged = {entry["step"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry}
    first = results["GPT2Block_0"].set_index("step")
    for step in expected_steps:
        assert first.loc[step, "loss"] == pytest.approx(logged[step], abs=1e-4)
    assert np.isfinite(first["grad_norm"]).all()
    # The Trainer's own TensorBoard run is there too (report_to), beside ours.
    assert len(list((tmp_path / "runs").iterdir())) == 2
    # Train end: no hook of ours left; the run file holds every sample.
    assert {name: len(m._forward_hooks) for name, m in model.named_modules()} == hooks_before
    assert ndt_fast.load(callback.tracker.output)["GPT2Block_1"]["step"].tolist() == expected_steps


def test_resumed_training_continues_the_run_file_without_a_step_twice(tmp_path):
    def train(max_steps: int, callback: DimensionalityCallback, **resume) -> transformers.Trainer:
        args = transformers.TrainingArguments(
            output_dir=str(tmp_path), per_device_train_batch_size=4, gradient_accumulation_steps=2,
            max_steps=max_steps, save_strategy="steps", save_steps=20, report_to=[], use_cpu=True,
            disable_tqdm=True, learning_rate=1e-3, dataloader_num_workers=0, logging_steps=1)
        trainer = transformers.Trainer(model=tiny_gpt2(), args=args, train_dataset=Tokens(400), callbacks=[callback])
        trainer.train(**resume)
        return trainer

    first = DimensionalityCallback(sampling_frequency=4)
    train(40, first)
    path = first.tracker.output
    assert ndt_fast.load(path)["GPT2Block_0"]["step"].tolist() == list(range(4, 41, 4))
    assert (tmp_path / "checkpoint-20" / "ndt_fast.json").exists()

    # Resume from step 20 (the file already holds 24..40): a new callback finds the run file
    # through the checkpoint, appends to it, and steps 24..40 done again are not written twice.
    resumed = DimensionalityCallback(sampling_frequency=4)
    trainer = train(60, resumed, resume_from_checkpoint=str(tmp_path / "checkpoint-20"))
    assert os.path.samefile(resumed.tracker.output, path)
    run = ndt_fast.load(path)
    for layer in ("GPT2Block_0", "GPT2Block_1"):
        assert run[layer]["step"].tolist() == list(range(4, 61, 4))
    # The appended samples are the resumed run's: its loss at step 44 (rounded in the log history).
    logged = {entry["step"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry}
    assert run["GPT2Block_0"].set_index("step").loc[44, "loss"] == pytest.approx(logged[44], abs=1e-4)
    assert list(tmp_path.glob("*.h5")) == [tmp_path / "ndt_fast.h5"]  # no second run file


@pytest.mark.parametrize("kind", ["gpt2", "llama", "bert", "vit"])
def test_default_layers_are_the_blocks_of_transformer_models(kind):
    small = {"num_hidden_layers": 3, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2}
    if kind == "gpt2":
        model = tiny_gpt2()
        expected = ["transformer.h.0", "transformer.h.1"]
    elif kind == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
            **small, num_key_value_heads=2, vocab_size=VOCAB, bos_token_id=0, eos_token_id=0))
        expected = ["model.layers.0", "model.layers.1", "model.layers.2"]
    elif kind == "bert":
        model = transformers.BertForSequenceClassification(transformers.BertConfig(**small, vocab_size=VOCAB))
        expected = ["bert.encoder.layer.0", "bert.encoder.layer.1", "bert.encoder.layer.2", "classifier"]
    else:
        model = transformers.ViTForImageClassification(transformers.ViTConfig(
            **small, image_size=16, patch_size=4, num_labels=3))
        expected = [f"vit.{'encoder.layer' if hasattr(model.vit, 'encoder') else 'layers'}.{i}" for i in range(3)]
        expected.append("classifier")
    names = {id(module): name for name, module in model.named_modules()}
    assert [names[id(layer)] for layer in hf_layers(model)] == expected


def test_bad_arguments_are_refused_when_the_callback_is_made():
    with pytest.raises(ValueError, match="sampling_frequency"):
        DimensionalityCallback(sampling_frequency=-1)
    with pytest.raises(ValueError, match="model"):
        DimensionalityCallback(model=None)
