"""The `mini` work of the step benchmarks: the embedded default's real training step
(`configs/pretrain.py:mini`: the small ResNet at 64x32, MiniLM-L6's shape with layers 0-4 frozen,
IVLC + TIC + IAP with IAP on every 4th sample, 4 images per caption, cosine logits, AdamW), as
plip_jax's trainer builds it and as the PyTorch twin (tests/reference/torch_plip.py) runs it.

Both sides start from the same random variables and see the same synthetic batches (batch = the
number of captions; each brings 4 images). CPU only: it needs ml_collections and the config file.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def config(batch: int):
    """configs/pretrain.py:mini at `batch` captions."""
    from plip_jax.config_parts import load

    c = load(f"{ROOT / 'configs' / 'pretrain.py'}:mini")
    c.data.batch_size = int(batch)
    return c


def setup(batch: int, n_batches: int = 2) -> tuple[Any, Any, Any, list[dict], dict]:
    """(config, text config, PLIP module, host batches, host variables)."""
    import jax

    from plip_jax.core import state as state_lib
    from plip_jax.data import synthetic
    from plip_jax.losses.total import active_tasks
    from plip_jax.models import text_tower
    from plip_jax.models.plip import build_model

    c = config(batch)
    text_cfg = text_tower.architecture_from_config(c.model)
    model = build_model(c.model, text_cfg, active_tasks(dict(c.losses.weights)))
    batches = [synthetic.synthetic_batch(batch, tuple(c.model.image.input_size), c.data.max_length,
                                         c.data.max_masked, vocab_size=text_cfg.vocab_size, seed=i,
                                         images_per_caption=c.data.images_per_caption)
               for i in range(n_batches)]
    variables = jax.device_get(jax.jit(lambda r: state_lib.init_variables(model, r, batches[0]))(
        state_lib.init_key(0)))
    return c, text_cfg, model, batches, variables


def jax_step(batch: int) -> tuple[Callable, tuple, Callable]:
    """(jitted step, initial args, advance) of the trainer's mini step (plip_jax.trainers.pretrain_step)."""
    import jax
    import jax.numpy as jnp

    from plip_jax.core import optim
    from plip_jax.core import state as state_lib
    from plip_jax.trainers.pretrain_step import make_train_step

    c, _, model, batches, variables = setup(batch)
    tx, schedule = optim.make_optimizer(c.optim, variables["params"], steps_per_epoch=1050,
                                        total_steps=int(c.train.steps), global_batch=batch)
    st = jax.jit(lambda p, bs: state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=p, batch_stats=bs,
                                                    opt_state=tx.init(p)))(variables["params"], variables["batch_stats"])
    fn = jax.jit(make_train_step(model, tx, c.losses, schedule), donate_argnums=(0,))
    dev = [jax.device_put(b) for b in batches]
    rng = jax.random.key(1)
    return fn, (st, dev[0], rng), lambda a, out, i: (out[0], dev[i % len(dev)], a[2])


def torch_step(batch: int) -> tuple[Callable[[int], float], Any]:
    """(step(i) -> loss, twin): the twin with the same variables, param groups and optimizer."""
    import torch

    from plip_jax.core import optim
    from tests.reference import torch_plip

    c, _, model, batches, variables = setup(batch)
    _, schedule = optim.make_optimizer(c.optim, variables["params"], steps_per_epoch=1050,
                                       total_steps=int(c.train.steps), global_batch=batch)
    torch.manual_seed(0)
    twin = torch_plip.TorchPLIP.like(model)
    torch_plip.load_jax_variables(twin, variables)
    opt = torch_plip.make_optimizer(torch_plip.param_groups(twin, variables, c.optim), c.optim)
    step = torch_plip.TorchTrainStep(twin, opt, c.losses, lambda s: float(schedule(s)))
    tb = [torch_plip.batch_to_torch(b) for b in batches]
    return (lambda i: step(tb[i % len(tb)])["loss"]), twin
