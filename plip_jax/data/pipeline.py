"""Training and evaluation input pipelines over TFDS data sources (or any Sequence of examples) with grain.

Training iterates one element per CAPTION (all `captions` + `prompt_caption` of every image, as PLIP
does). Every element is a pure function of its global index g in the stream of all epochs:
epoch = g // epoch_length picks the per-epoch order and the mask ratio, and np.random.default_rng
((seed, g)) drives augmentation and masking. So the stream does not depend on worker count, and
restoring the grain iterator state resumes at exactly the next batch.
"""
from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args, get_type_hints

import grain
import numpy as np

from plip_jax.data import masking, transforms
from plip_jax.data.synthetic import BATCH_KEYS



@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Input-pipeline settings (plain dataclass; build one from any mapping with `DataConfig.from_any`)."""

    image_size: tuple[int, int] = (256, 128)
    """(H, W) after bicubic resize."""
    batch_size: int = 512
    """The GLOBAL batch (all processes)."""
    max_length: int = 64
    """Tokens per caption (BERT, 64)."""
    max_masked: int = 24
    """M, padded masked positions per caption."""
    sampler: Literal["caption", "identity"] = "caption"
    """'caption' (global shuffle of image-caption pairs) or 'identity' (P ids x K pairs per batch)."""
    p_identities: int = 0
    k_images: int = 4
    """P and K of the identity sampler (P = batch_size // K when P is 0)."""
    flip: bool = True
    pad_crop: bool = False
    random_erasing: bool = False
    """Augmentation switches (paper: flip only)."""
    mask_schedule: Literal["sqrt", "linear", "square", "constant"] = "sqrt"
    mask_lower: float = 0.2
    mask_upper: float = 0.8
    """The IAP mask-ratio curriculum (masking.mask_ratio)."""
    images_per_caption: int = 1
    """1 (paper) or K > 1: each caption also brings K-1 other images of its identity (`more_images`,
    (B, K-1, H, W, 3)), more image samples per caption pass for identity-level IVLC."""
    workers: int = 0
    """grain worker processes (0 = in-process)."""
    read_threads: int = 2
    """Read threads per process."""

    @classmethod
    def from_any(cls, cfg: "DataConfig | Mapping[str, Any] | Any", strict: bool = True) -> "DataConfig":
        """Accept a DataConfig, a mapping, or an object with `to_dict()` (e.g. an ml_collections ConfigDict);
        `strict=False` ignores unrelated fields (e.g. a whole `config.data` with name/data_dir)."""
        if isinstance(cfg, cls):
            return cfg
        if hasattr(cfg, "to_dict"):
            cfg = cfg.to_dict()
        if not isinstance(cfg, Mapping):
            raise TypeError(f"data config must be a DataConfig or a mapping; got {type(cfg).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - names)
        if unknown and strict:
            raise ValueError(f"unknown data config fields {unknown}; valid fields: {sorted(names)}")
        kw = {k: v for k, v in cfg.items() if k in names}
        if "image_size" in kw:
            kw["image_size"] = tuple(int(v) for v in kw["image_size"])
        return cls(**kw)

    def augment_config(self) -> transforms.AugmentConfig:
        return transforms.AugmentConfig(flip=self.flip, pad_crop=self.pad_crop,
                                        random_erasing=self.random_erasing)


SAMPLERS: tuple[str, ...] = get_args(get_type_hints(DataConfig)["sampler"])


# ---------------------------------------------------------------------------------------------
# Example fields
# ---------------------------------------------------------------------------------------------
def _text(x: Any) -> str:
    """TFDS Text features come back as bytes; in-memory sources may hold str."""
    if isinstance(x, (bytes, np.bytes_)):
        return bytes(x).decode("utf-8")
    return str(x)


def _captions(example: Mapping[str, Any]) -> list[str]:
    return [_text(c) for c in example.get("captions", ())]


def caption_and_spans(example: Mapping[str, Any], slot: int) -> tuple[str, list]:
    """Caption number `slot` (the prompt caption comes after the `captions`) and its phrase spans."""
    caps = _captions(example)
    raw = _text(example.get("spans_json", b"")) or "{}"
    try:
        spans = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"example {_text(example.get('file_path', '?'))}: bad spans_json ({e})") from None
    if slot < len(caps):
        per_caption = spans.get("captions", [])
        return caps[slot], (per_caption[slot] if slot < len(per_caption) else [])
    return _text(example.get("prompt_caption", b"")), spans.get("prompt_caption", [])


def _num_captions(example: Mapping[str, Any]) -> int:
    return len(_captions(example)) + (1 if _text(example.get("prompt_caption", b"")) else 0)


def captions_with_spans(example: Mapping[str, Any]) -> list[tuple[str, list]]:
    """Every caption of a raw example with its attribute-phrase spans, in caption-slot order (the
    `captions`, then the prompt caption when there is one), as training reads them."""
    return [caption_and_spans(example, slot) for slot in range(_num_captions(example))]


# ---------------------------------------------------------------------------------------------
# Fast reads of TFDS array_record sources
# ---------------------------------------------------------------------------------------------
_TRAIN_FIELDS = ("image", "id", "captions", "prompt_caption", "spans_json")


def _example_proto_module():
    try:
        from tensorflow_datasets.core.example_parser import tf_example_pb2
    except ImportError:  # pragma: no cover - depends on the tfds version
        return None
    return tf_example_pb2


class TrainFieldsView(Sequence):
    """A TFDS array_record source read as raw tf.train.Example protos, parsing only training fields.

    tfds' generic NumPy deserialisation costs ~0.6 ms/example in Python (all 14 features, nested dicts);
    parsing the 5 fields training needs with protobuf (upb) costs ~0.04 ms. Images stay encoded bytes
    (decoded later in draft mode). Build one with `train_fields_view(source)`.
    """

    def __init__(self, records: Sequence[bytes]):
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    @staticmethod
    def parse(raw: bytes) -> dict[str, Any]:
        feats = _example_proto_module().Example.FromString(raw).features.feature
        return {"image": feats["image"].bytes_list.value[0], "id": feats["id"].int64_list.value[0],
                "captions": list(feats["captions"].bytes_list.value),
                "prompt_caption": feats["prompt_caption"].bytes_list.value[0],
                "spans_json": feats["spans_json"].bytes_list.value[0]}

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.parse(self.records[i])

    def __getitems__(self, idx: Sequence[int]) -> list[dict[str, Any]]:
        recs = self.records.__getitems__(idx) if hasattr(self.records, "__getitems__") else [self.records[i] for i in idx]
        return [self.parse(r) for r in recs]


def train_fields_view(source: Sequence[Mapping[str, Any]]) -> Sequence[Mapping[str, Any]]:
    """`TrainFieldsView` over a tfds array_record data source with our features; else `source` unchanged."""
    records = getattr(source, "data_source", None)
    info = getattr(source, "dataset_info", None)
    features = getattr(info, "features", None)
    if records is None or features is None or _example_proto_module() is None:
        return source
    if not set(_TRAIN_FIELDS) <= set(features.keys()):
        return source
    try:
        view = TrainFieldsView(records)
        if len(view):
            view[0]
    except Exception:  # any layout surprise: keep tfds' own (slower) decoding
        return source
    return view


# ---------------------------------------------------------------------------------------------
# Caption index: which (image, caption slot) pairs exist
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CaptionIndex:
    """All image-caption pairs of a source: pair p = caption `slot[p]` of image `image[p]`."""
    image: np.ndarray       # (P,) int32 index into the source
    slot: np.ndarray        # (P,) int16 caption number (prompt caption last)
    image_ids: np.ndarray   # (N,) int64 person id of each image

    @classmethod
    def build(cls, source: Sequence[Mapping[str, Any]], chunk: int = 256) -> "CaptionIndex":
        """Scan the source once (fast proto reads for tfds sources, batched where `__getitems__` exists)."""
        source = train_fields_view(source)
        n = len(source)
        counts = np.zeros(n, np.int64)
        ids = np.zeros(n, np.int64)
        for lo in range(0, n, chunk):
            idx = list(range(lo, min(n, lo + chunk)))
            exs = source.__getitems__(idx) if hasattr(source, "__getitems__") else [source[i] for i in idx]
            for i, ex in zip(idx, exs):
                counts[i] = _num_captions(ex)
                ids[i] = int(ex["id"])
        if n and (ids.min() < 0 or ids.max() > np.iinfo(np.int32).max):
            raise ValueError(f"person ids must fit in int32 and be >= 0; got range [{ids.min()}, {ids.max()}]")
        if n > np.iinfo(np.int32).max or (n and counts.max() > np.iinfo(np.int16).max):
            raise ValueError(f"source too large for the caption index: {n} images, up to {counts.max()} captions")
        # Compact dtypes: the index is pickled into every grain worker (12M pairs -> 72 MB).
        image = np.repeat(np.arange(n, dtype=np.int32), counts)
        starts = np.cumsum(counts) - counts
        slot = (np.arange(len(image)) - np.repeat(starts, counts)).astype(np.int16)
        return cls(image=image, slot=slot, image_ids=ids)

    def __len__(self) -> int:
        return len(self.image)

    def save(self, path: str) -> None:
        np.savez(path, image=self.image, slot=self.slot, image_ids=self.image_ids)

    @classmethod
    def load(cls, path: str) -> "CaptionIndex":
        with np.load(path) as z:
            return cls(image=z["image"], slot=z["slot"], image_ids=z["image_ids"])


# ---------------------------------------------------------------------------------------------
# Per-epoch orders (samplers). Each maps (epoch, position) -> pair index, deterministically.
# ---------------------------------------------------------------------------------------------
class CaptionOrder:
    """Global shuffle of all pairs, a new permutation per epoch (grain's O(1) index_shuffle)."""

    def __init__(self, num_pairs: int, seed: int):
        self.num_pairs, self.seed = num_pairs, seed

    def __call__(self, epoch: int, pos: int) -> int:
        return grain.experimental.index_shuffle(pos, max_index=self.num_pairs - 1,
                                                seed=(self.seed + epoch) % 2**32, rounds=4)


class _IdentityOrder:
    """P identities x K pairs per global batch; pairs of an identity cycle over its images first."""

    def __init__(self, index: CaptionIndex, p: int, k: int, epoch_length: int, seed: int):
        self.p, self.k, self.epoch_length, self.seed = p, k, epoch_length, seed
        pair_ids = index.image_ids[index.image]
        order = np.argsort(pair_ids, kind="stable")
        uniq, starts = np.unique(pair_ids[order], return_index=True)
        if len(uniq) < p:
            raise ValueError(f"identity sampler needs at least P={p} identities; the source has {len(uniq)}")
        self._pairs_by_id = np.split(order, starts[1:])
        self._image = index.image
        self._cache: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()  # grain read threads share this object

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_cache", "_lock")}

    def __setstate__(self, state):
        self.__dict__.update(state, _cache={}, _lock=threading.Lock())

    def _groups(self, rng: np.random.Generator) -> list[list[np.ndarray]]:
        """Per identity, its pairs split into groups of K (round-robin over its shuffled images)."""
        out = []
        for pairs in self._pairs_by_id:
            pairs = rng.permutation(pairs)
            imgs = self._image[pairs]
            by_image = np.argsort(imgs, kind="stable")
            sorted_imgs = imgs[by_image]
            first = np.flatnonzero(np.r_[True, sorted_imgs[1:] != sorted_imgs[:-1]])
            rank = np.empty(len(pairs), np.int64)  # caption round of each pair within its image
            rank[by_image] = np.arange(len(pairs)) - np.repeat(first, np.diff(np.r_[first, len(pairs)]))
            pairs = pairs[np.argsort(rank, kind="stable")]
            pad = (-len(pairs)) % self.k
            if pad:
                pairs = np.concatenate([pairs, rng.choice(pairs, pad)])
            out.append(list(pairs.reshape(-1, self.k)))
        return out

    def _build(self, epoch: int) -> np.ndarray:
        batches: list[np.ndarray] = []
        need = self.epoch_length // (self.p * self.k)
        rnd = 0
        while len(batches) < need:
            rng = np.random.default_rng((self.seed, epoch, rnd))
            groups = self._groups(rng)
            max_rounds = max(len(g) for g in groups)
            for r in range(max_rounds):  # round r: the r-th group of each identity, distinct ids
                ids = rng.permutation([i for i, g in enumerate(groups) if len(g) > r])
                for b in range(len(ids) // self.p):
                    batches.append(np.concatenate([groups[i][r] for i in ids[b * self.p:(b + 1) * self.p]]))
            rnd += 1
        rng = np.random.default_rng((self.seed, epoch, 2**31))  # distinct from the round streams
        chosen = [batches[i] for i in np.sort(rng.permutation(len(batches))[:need])]
        return np.concatenate(chosen)

    def __call__(self, epoch: int, pos: int) -> int:
        with self._lock:
            if epoch not in self._cache:
                if len(self._cache) >= 2:
                    self._cache.pop(min(self._cache))
                self._cache[epoch] = self._build(epoch)
            order = self._cache[epoch]
        return int(order[pos])


# ---------------------------------------------------------------------------------------------
# Element function
# ---------------------------------------------------------------------------------------------
def read_examples(source, indices: np.ndarray) -> list:
    """source[i] for each index, in one batched read where the source has `__getitems__`."""
    idx = [int(i) for i in indices]
    if hasattr(source, "__getitems__"):
        return list(source.__getitems__(idx))
    return [source[i] for i in idx]


class _MakeBatch:
    """Global indices of one local batch -> the batch (decode, resize, augment, tokenize, mask).

    Row b is a pure function of (seed, g = gs[b]): its own rng `default_rng((seed, g))` draws the
    augmentation first, then the phrase masks, then the extra images, exactly as one element alone
    would. Working on the batch lets tokenization and masking run in a few calls instead of per row.
    """

    def __init__(self, source, index: CaptionIndex, order, tokenizer, cfg: DataConfig,
                 epoch_length: int, total_epochs: int, seed: int):
        self.source, self.index, self.order, self.tokenizer = source, index, order, tokenizer
        self.cfg, self.aug = cfg, cfg.augment_config()
        self.epoch_length, self.total_epochs, self.seed = epoch_length, total_epochs, seed
        if cfg.images_per_caption > 1:  # images of each identity, for the extra images of a caption
            ids = index.image_ids
            self._by_id = np.argsort(ids, kind="stable").astype(np.int32)
            uniq, self._starts, self._counts = np.unique(ids[self._by_id], return_index=True, return_counts=True)
            self._uniq = uniq

    def _more_images(self, image: int, rng: np.random.Generator) -> np.ndarray:
        """K-1 other images of `image`'s identity (without repeats while the identity has enough)."""
        k = self.cfg.images_per_caption - 1
        u = int(np.searchsorted(self._uniq, self.index.image_ids[image]))
        same = self._by_id[self._starts[u]:self._starts[u] + self._counts[u]]
        others = same[same != image]
        if len(others) == 0:
            others = same
        pick = rng.choice(others, size=k, replace=len(others) < k)
        return np.stack([transforms.load_train_image(self.source[int(i)]["image"], self.cfg.image_size, rng, self.aug)
                         for i in pick])

    def __call__(self, gs: np.ndarray) -> dict[str, np.ndarray]:
        cfg = self.cfg
        gs = np.asarray(gs, np.int64).reshape(-1)
        n, (h, w) = len(gs), cfg.image_size
        epochs, poss = np.divmod(gs, self.epoch_length)
        pairs = np.fromiter((self.order(int(e), int(p)) for e, p in zip(epochs, poss)), np.int64, count=n)
        images = self.index.image[pairs]
        examples = read_examples(self.source, images)
        rngs = [np.random.default_rng((self.seed, int(g))) for g in gs]

        image = np.empty((n, h, w, 3), np.uint8)  # each row written once, no batch-level stack
        for b in range(n):
            image[b] = transforms.load_train_image(examples[b]["image"], cfg.image_size, rngs[b], self.aug)

        texts, spans = zip(*(caption_and_spans(ex, int(s)) for ex, s in zip(examples, self.index.slot[pairs])))
        enc = self.tokenizer.encode_with_offsets(list(texts), max_length=cfg.max_length)
        ratio = {e: masking.mask_ratio(e, self.total_epochs, cfg.mask_lower, cfg.mask_upper, cfg.mask_schedule)
                 for e in set(epochs.tolist())}
        masked, positions, labels, weights = masking.mask_phrases_batch(
            enc["input_ids"], enc["offsets"], spans, [ratio[e] for e in epochs.tolist()], rngs,
            self.tokenizer.mask_token_id, cfg.max_masked)
        out = {"image": image, "input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
               "masked_input_ids": masked, "mlm_positions": positions, "mlm_labels": labels,
               "mlm_weights": weights, "id": self.index.image_ids[images].astype(np.int32)}
        if cfg.images_per_caption > 1:
            out["more_images"] = np.stack([self._more_images(int(i), rng) for i, rng in zip(images, rngs)])
        return out


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TrainData:
    """The training stream of this process, plus the sizes the training loop needs.

    `iterator()` returns a grain DatasetIterator with get_state/set_state; the loop checkpoints it with
    `grain.checkpoint.CheckpointSave(it)` / `CheckpointRestore(it)` inside its Orbax composite.
    """
    dataset: grain.IterDataset
    steps_per_epoch: int
    total_epochs: int
    global_batch_size: int
    local_batch_size: int
    num_pairs: int

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.total_epochs

    def iterator(self) -> grain.DatasetIterator:
        return iter(self.dataset)


def _validate(cfg: DataConfig, process_index: int, process_count: int) -> tuple[int, int, int]:
    """Check the config and return (local batch, P, K)."""
    if cfg.sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {cfg.sampler!r}; choose one of {SAMPLERS}")
    if process_count <= 0 or not 0 <= process_index < process_count:
        raise ValueError(f"bad process_index/process_count: {process_index}/{process_count}")
    if cfg.batch_size <= 0 or cfg.batch_size % process_count:
        raise ValueError(f"global batch_size {cfg.batch_size} must be positive and divisible by the "
                         f"process count {process_count}")
    if isinstance(cfg.images_per_caption, bool) or not isinstance(cfg.images_per_caption, int) \
            or cfg.images_per_caption < 1:
        raise ValueError(f"images_per_caption must be an integer >= 1; got {cfg.images_per_caption!r}")
    if cfg.workers < 0 or cfg.read_threads < 0:
        raise ValueError(f"workers and read_threads must be >= 0; got {cfg.workers}, {cfg.read_threads}")
    masking.mask_ratio(0, 1, cfg.mask_lower, cfg.mask_upper, cfg.mask_schedule)  # validates schedule
    p, k = cfg.p_identities, cfg.k_images
    if cfg.sampler == "identity":
        if k <= 0:
            raise ValueError(f"k_images must be positive; got {k}")
        p = p or cfg.batch_size // k
        if p * k != cfg.batch_size:
            raise ValueError(f"identity sampler: p_identities*k_images = {p}*{k} must equal batch_size "
                             f"{cfg.batch_size}")
    return cfg.batch_size // process_count, p, k


def _ensure_absl_flags_parsed() -> None:
    """grain's mp_prefetch reads an absl flag; outside `app.run` (tests, notebooks) flags are unparsed."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def make_train_dataset(source: Sequence[Mapping[str, Any]], tokenizer, cfg: DataConfig | Mapping[str, Any],
                       *, seed: int, total_epochs: int, process_index: int = 0, process_count: int = 1,
                       caption_index: CaptionIndex | None = None, fast_read: bool = True) -> TrainData:
    """Build this process's batched training stream over `total_epochs` epochs of image-caption pairs.

    `source` is a random-access Sequence of examples in the docs/contracts.md format (e.g.
    `tfds.data_source(...)`; pass `decoders={'image': tfds.decode.SkipDecoding()}` there to let the
    pipeline decode JPEGs in draft mode). `caption_index` skips the one-off scan of the source.
    `fast_read` parses only the training fields of tfds array_record records (`TrainFieldsView`).
    Batches are dicts with exactly the keys/dtypes of `synthetic.batch_spec(local_batch_size, ...)`
    (pass it `images_per_caption` when that is > 1: `more_images` is then added).
    """
    cfg = DataConfig.from_any(cfg)
    local_bs, p, k = _validate(cfg, process_index, process_count)
    source = train_fields_view(source) if fast_read else source
    if total_epochs <= 0 or seed < 0:
        raise ValueError(f"total_epochs must be positive and seed >= 0; got {total_epochs}, {seed}")
    index = caption_index if caption_index is not None else CaptionIndex.build(source)
    steps = len(index) // cfg.batch_size
    if steps == 0:
        raise ValueError(f"the source has {len(index)} image-caption pairs, fewer than one global batch "
                         f"({cfg.batch_size})")
    epoch_length = steps * cfg.batch_size
    order = (_IdentityOrder(index, p, k, epoch_length, seed) if cfg.sampler == "identity"
             else CaptionOrder(len(index), seed))
    make = _MakeBatch(source, index, order, tokenizer, cfg, epoch_length, total_epochs, seed)

    # Batch the global indices, then build each batch in one call (same rows as per-element maps).
    ds = (grain.MapDataset.range(total_epochs * epoch_length)[process_index::process_count]
          .batch(local_bs, drop_remainder=True)
          .map(make))
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=cfg.read_threads,
                                                 prefetch_buffer_size=max(1, cfg.read_threads)))
    if cfg.workers > 0:
        _ensure_absl_flags_parsed()
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.workers))
    return TrainData(dataset=it_ds, steps_per_epoch=steps, total_epochs=total_epochs,
                     global_batch_size=cfg.batch_size, local_batch_size=local_bs, num_pairs=len(index))


def global_batch(local_batch: Mapping[str, np.ndarray], sharding) -> dict[str, Any]:
    """Assemble per-process numpy batches into global jax.Arrays (`sharding`: one, or one per key)."""
    import jax  # lazy: keeps grain worker processes light

    out = {}
    for key, x in local_batch.items():
        sh = sharding[key] if isinstance(sharding, Mapping) else sharding
        try:
            out[key] = jax.make_array_from_process_local_data(sh, np.asarray(x))
        except ValueError as e:
            raise ValueError(f"cannot shard batch key {key!r} with local shape {np.shape(x)} over {sh}: {e}. "
                             f"The global batch must be divisible by the number of devices it is sharded "
                             f"over ({jax.device_count()} devices).") from None
    return out


def load_eval_split(source: Sequence[Mapping[str, Any]], tokenizer, image_size: tuple[int, int],
                    max_items: int | None = None, include_prompt: bool = False,
                    max_length: int | None = None) -> dict[str, Any]:
    """Load a retrieval/Re-ID/attribute eval split: gallery = every image, query = every caption.

    Returns images uint8 (N,H,W,3), image_ids (N,), captions list[str], input_ids/attention_mask
    (M,L) int32, caption_ids (M,), caption_image_index (M,) (which image a caption came from),
    file_paths list[str], camera_ids (N,), attribute_labels (N,K) int8. The prompt caption joins the
    queries only with `include_prompt` (human-written captions are the benchmark protocol).
    """
    n = len(source) if max_items is None else min(len(source), int(max_items))
    if n == 0:
        raise ValueError("eval split is empty")
    images, ids, paths, cams, attrs = [], [], [], [], []
    captions, cap_ids, cap_img = [], [], []
    for i in range(n):
        ex = source[i]
        images.append(transforms.load_eval_image(ex["image"], image_size))  # full decode, never draft
        ids.append(int(ex["id"]))
        paths.append(_text(ex.get("file_path", b"")))
        cams.append(int(ex.get("camera_id", -1)))
        attrs.append(np.asarray(ex.get("attribute_labels", np.zeros(0, np.int8)), np.int8))
        caps = _captions(ex)
        prompt = _text(ex.get("prompt_caption", b""))
        if include_prompt and prompt:
            caps.append(prompt)
        captions += caps
        cap_ids += [ids[-1]] * len(caps)
        cap_img += [i] * len(caps)
    if len({a.shape for a in attrs}) > 1:
        raise ValueError(f"attribute_labels have differing shapes {sorted({a.shape for a in attrs})}")
    tok = tokenizer(captions, max_length=max_length) if captions else {
        "input_ids": np.zeros((0, max_length or tokenizer.max_length), np.int32),
        "attention_mask": np.zeros((0, max_length or tokenizer.max_length), np.int32)}
    return {"images": np.stack(images), "image_ids": np.asarray(ids, np.int64), "captions": captions,
            "input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"],
            "caption_ids": np.asarray(cap_ids, np.int64), "caption_image_index": np.asarray(cap_img, np.int64),
            "file_paths": paths, "camera_ids": np.asarray(cams, np.int64), "attribute_labels": np.stack(attrs)}


__all__ = ["DataConfig", "CaptionIndex", "TrainData", "TrainFieldsView", "train_fields_view",
           "make_train_dataset", "global_batch", "load_eval_split", "captions_with_spans", "BATCH_KEYS", "SAMPLERS"]
