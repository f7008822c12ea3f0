"""Tiny models and loops written the way the JAX AI stack tutorials and Flax examples write them.

Plain user code: no jaxmagic import. Sizes are tiny so the whole real-world layer runs in
well under two minutes on two CPU cores. Patterns follow (in our own words):

- miniGPT (JAX AI stack "Train a miniGPT language model"): token + position embedding,
  causal attention blocks with Dropout, ``@nnx.jit`` methods ``sample_from`` and
  ``generate_step``, a Python ``generate_text`` loop with ``int(...)`` per token.
- VAE (JAX AI stack "Debug a VAE"): an encoder that keeps ``nnx.Rngs`` and samples noise
  with ``self.rngs.noise()`` inside ``__call__``.
- CNN (Flax "MNIST tutorial"): Conv + BatchNorm + Dropout, ``model.train()`` /
  ``model.eval()``, ``@nnx.jit`` train and eval steps with ``nnx.Optimizer``.
- Linen (Flax examples): ``nn.compact`` module, ``flax.training.train_state.TrainState``,
  a ``@jax.jit`` step over the state.
- A diffusion-style UNet at tiny size: time embedding, down/up convolutions, a skip.
- A data loader without ``drop_last``: the last batch is short.
- Orbax checkpoints made by hand: ``ocp.StandardCheckpointer`` and ``ocp.CheckpointManager``.
"""

from __future__ import annotations

import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from flax import nnx
from flax.training import train_state

# Uniform initialisers as in the miniGPT tutorial (also cheap to compile: the default
# truncated-normal initialiser costs seconds of XLA compile per kernel shape on CPU).
INIT = nnx.initializers.xavier_uniform()

# One optax transformation reused for every nnx.Optimizer: the transformation is static in the
# optimizer's graph, so a new optax.adam(...) per optimizer recompiles every train step.
tx = optax.adam(1e-3)

# ---------------------------------------------------------------------------------------------
# miniGPT

VOCAB, MAXLEN, EMBED, HEADS, FF = 32, 8, 16, 2, 32
TOP_K = 5


def causal_mask(seq_len: int) -> jax.Array:
    return jnp.tril(jnp.ones((seq_len, seq_len)))


class TransformerBlock(nnx.Module):
    def __init__(self, embed_dim: int, num_heads: int, ff_dim: int, *, rngs: nnx.Rngs, rate: float = 0.1):
        self.mha = nnx.MultiHeadAttention(
            num_heads=num_heads, in_features=embed_dim, decode=False, kernel_init=INIT, rngs=rngs
        )
        self.dropout1 = nnx.Dropout(rate=rate, rngs=rngs)
        self.layer_norm1 = nnx.LayerNorm(embed_dim, rngs=rngs)
        self.linear1 = nnx.Linear(embed_dim, ff_dim, kernel_init=INIT, rngs=rngs)
        self.linear2 = nnx.Linear(ff_dim, embed_dim, kernel_init=INIT, rngs=rngs)
        self.dropout2 = nnx.Dropout(rate=rate, rngs=rngs)
        self.layer_norm2 = nnx.LayerNorm(embed_dim, rngs=rngs)

    def __call__(self, inputs, training: bool = False):
        _, seq_len, _ = inputs.shape
        attention = self.mha(inputs, mask=causal_mask(seq_len), decode=False)
        attention = self.dropout1(attention, deterministic=not training)
        out1 = self.layer_norm1(inputs + attention)
        ffn = self.linear2(nnx.relu(self.linear1(out1)))
        ffn = self.dropout2(ffn, deterministic=not training)
        return self.layer_norm2(out1 + ffn)


class TokenAndPositionEmbedding(nnx.Module):
    def __init__(self, maxlen: int, vocab_size: int, embed_dim: int, *, rngs: nnx.Rngs):
        self.token_emb = nnx.Embed(
            num_embeddings=vocab_size, features=embed_dim, embedding_init=INIT, rngs=rngs
        )
        self.pos_emb = nnx.Embed(num_embeddings=maxlen, features=embed_dim, embedding_init=INIT, rngs=rngs)

    def __call__(self, x):
        positions = jnp.arange(0, x.shape[1])[None, :]
        return self.token_emb(x) + self.pos_emb(positions)


class MiniGPT(nnx.Module):
    def __init__(
        self,
        maxlen: int = MAXLEN,
        vocab_size: int = VOCAB,
        embed_dim: int = EMBED,
        num_heads: int = HEADS,
        ff_dim: int = FF,
        num_blocks: int = 1,
        *,
        rngs: nnx.Rngs,
    ):
        self.maxlen = maxlen
        self.embedding_layer = TokenAndPositionEmbedding(maxlen, vocab_size, embed_dim, rngs=rngs)
        self.transformer_blocks = nnx.List(
            [TransformerBlock(embed_dim, num_heads, ff_dim, rngs=rngs) for _ in range(num_blocks)]
        )
        self.output_layer = nnx.Linear(embed_dim, vocab_size, kernel_init=INIT, rngs=rngs)

    def __call__(self, inputs, training: bool = False):
        x = self.embedding_layer(inputs)
        for block in self.transformer_blocks:
            x = block(x, training=training)
        return self.output_layer(x)

    @nnx.jit
    def sample_from(self, logits):
        logits, indices = jax.lax.top_k(logits, k=TOP_K)
        probs = nnx.softmax(logits)
        return jax.random.choice(jax.random.key(0), indices, p=probs)

    @nnx.jit
    def generate_step(self, padded_tokens, sample_index):
        logits = self(padded_tokens)
        return self.sample_from(logits[0][sample_index])

    def generate_text(self, max_tokens: int, start_tokens: list[int]) -> list[int]:
        generated: list[int] = []
        for _ in range(max_tokens):
            sample_index = len(start_tokens) + len(generated) - 1
            if sample_index >= self.maxlen - 1:
                break
            padded = start_tokens + generated + [0] * (self.maxlen - len(start_tokens) - len(generated))
            next_token = int(self.generate_step(jnp.array(padded)[None, :], sample_index))
            generated.append(next_token)
        return start_tokens + generated


def gpt_loss_fn(model, batch):
    logits = model(batch[0], training=True)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits=logits, labels=batch[1]).mean()
    return loss, logits


@nnx.jit
def gpt_train_step(model, optimizer, batch):
    grad_fn = nnx.value_and_grad(gpt_loss_fn, has_aux=True)
    (loss, _), grads = grad_fn(model, batch)
    optimizer.update(model, grads)
    return loss


def token_batches(n_batches: int, batch_size: int = 4, seed: int = 0):
    """Next-token pairs (inputs, targets shifted by one) from a random token stream."""
    rng = np.random.default_rng(seed)
    stream = rng.integers(1, VOCAB, size=n_batches * batch_size * MAXLEN + 1).astype(np.int32)
    out = []
    for i in range(n_batches):
        start = i * batch_size * MAXLEN
        chunk = stream[start : start + batch_size * MAXLEN + 1]
        out.append(
            (
                jnp.asarray(chunk[:-1].reshape(batch_size, MAXLEN)),
                jnp.asarray(chunk[1:].reshape(batch_size, MAXLEN)),
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# VAE with nnx.Rngs sampling in the encoder


class Encoder(nnx.Module):
    def __init__(self, input_size: int, intermediate_size: int, output_size: int, *, rngs: nnx.Rngs):
        self.rngs = rngs
        self.linear = nnx.Linear(input_size, intermediate_size, kernel_init=INIT, rngs=rngs)
        self.linear_mean = nnx.Linear(intermediate_size, output_size, kernel_init=INIT, rngs=rngs)
        self.linear_std = nnx.Linear(intermediate_size, output_size, kernel_init=INIT, rngs=rngs)

    def __call__(self, x):
        x = jax.nn.relu(self.linear(x))
        mean = self.linear_mean(x)
        std = jnp.exp(self.linear_std(x))
        z = mean + std * jax.random.normal(self.rngs.noise(), mean.shape)
        return z, mean, std


class Decoder(nnx.Module):
    def __init__(self, input_size: int, intermediate_size: int, output_size: int, *, rngs: nnx.Rngs):
        self.linear1 = nnx.Linear(input_size, intermediate_size, kernel_init=INIT, rngs=rngs)
        self.linear2 = nnx.Linear(intermediate_size, output_size, kernel_init=INIT, rngs=rngs)

    def __call__(self, z):
        return self.linear2(jax.nn.relu(self.linear1(z)))


class VAE(nnx.Module):
    def __init__(self, image_shape=(8, 8), hidden_size: int = 16, latent_size: int = 4, *, rngs: nnx.Rngs):
        self.image_shape = image_shape
        size = math.prod(image_shape)
        self.encoder = Encoder(size, hidden_size, latent_size, rngs=rngs)
        self.decoder = Decoder(latent_size, hidden_size, size, rngs=rngs)

    def __call__(self, x):
        x = x.reshape((x.shape[0], -1))
        z, mean, std = self.encoder(x)
        logits = self.decoder(z)
        return jnp.reshape(logits, (-1, *self.image_shape)), mean, std


def vae_loss(model, x):
    logits, mean, std = model(x)
    kl = jnp.mean(jnp.sum(std**2 + mean**2 - 1 - 2 * jnp.log(std + 1e-6), axis=-1)) / 2
    reconstruction = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, x))
    return reconstruction + 0.1 * kl


@nnx.jit
def vae_train_step(model, optimizer, x):
    loss, grads = nnx.value_and_grad(vae_loss)(model, x)
    optimizer.update(model, grads)
    return loss


def images(n: int, seed: int = 0, shape=(8, 8)) -> np.ndarray:
    """Binary 'digit-like' images in [0, 1]."""
    rng = np.random.default_rng(seed)
    return (rng.random((n, *shape)) > 0.6).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# CNN with BatchNorm + Dropout, train()/eval()


class CNN(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, 4, kernel_size=(3, 3), kernel_init=INIT, rngs=rngs)
        self.batch_norm1 = nnx.BatchNorm(4, rngs=rngs)
        self.dropout1 = nnx.Dropout(rate=0.1, rngs=rngs)
        self.conv2 = nnx.Conv(4, 8, kernel_size=(3, 3), kernel_init=INIT, rngs=rngs)
        self.batch_norm2 = nnx.BatchNorm(8, rngs=rngs)
        self.linear1 = nnx.Linear(2 * 2 * 8, 16, kernel_init=INIT, rngs=rngs)
        self.dropout2 = nnx.Dropout(rate=0.1, rngs=rngs)
        self.linear2 = nnx.Linear(16, 10, kernel_init=INIT, rngs=rngs)

    def __call__(self, x):
        x = nnx.avg_pool(nnx.relu(self.batch_norm1(self.conv1(x))), window_shape=(2, 2), strides=(2, 2))
        x = self.dropout1(x)
        x = nnx.avg_pool(nnx.relu(self.batch_norm2(self.conv2(x))), window_shape=(2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)
        x = self.dropout2(nnx.relu(self.linear1(x)))
        return self.linear2(x)


def cnn_loss_fn(model, batch):
    logits = model(batch["image"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits=logits, labels=batch["label"]).mean()
    return loss, logits


@nnx.jit
def cnn_train_step(model, optimizer, metrics, batch):
    grad_fn = nnx.value_and_grad(cnn_loss_fn, has_aux=True)
    (loss, logits), grads = grad_fn(model, batch)
    metrics.update(loss=loss, logits=logits, labels=batch["label"])
    optimizer.update(model, grads)


@nnx.jit
def cnn_eval_step(model, metrics, batch):
    loss, logits = cnn_loss_fn(model, batch)
    metrics.update(loss=loss, logits=logits, labels=batch["label"])


def digit_batches(n_batches: int, batch_size: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [
        {
            "image": jnp.asarray(rng.normal(size=(batch_size, 8, 8, 1)).astype(np.float32)),
            "label": jnp.asarray(rng.integers(0, 10, size=batch_size).astype(np.int32)),
        }
        for _ in range(n_batches)
    ]


# ---------------------------------------------------------------------------------------------
# Linen + TrainState


class LinenMLP(nn.Module):
    features: int = 16
    classes: int = 3

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(self.features, kernel_init=nn.initializers.xavier_uniform())(x))
        return nn.Dense(self.classes, kernel_init=nn.initializers.xavier_uniform())(x)


def create_train_state(seed: int = 0, din: int = 8, lr: float = 1e-2) -> train_state.TrainState:
    module = LinenMLP()
    params = module.init(jax.random.key(seed), jnp.ones((1, din)))["params"]
    return train_state.TrainState.create(apply_fn=module.apply, params=params, tx=optax.adam(lr))


@jax.jit
def linen_train_step(state, batch):
    def loss_fn(params):
        logits = state.apply_fn({"params": params}, batch[0])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean()

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss


def classification_data(n: int, din: int = 8, classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, din)).astype(np.float32)
    y = np.argmax(X @ rng.normal(size=(din, classes)), axis=1).astype(np.int32)
    return X, y


# ---------------------------------------------------------------------------------------------
# A diffusion-style UNet at tiny size


def timestep_embedding(t, dim: int):
    half = dim // 2
    freqs = jnp.exp(-math.log(10_000.0) * jnp.arange(half) / half)
    args = t[:, None].astype(jnp.float32) * freqs[None, :]
    return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


class TinyUNet(nnx.Module):
    def __init__(self, channels: int = 4, time_dim: int = 8, *, rngs: nnx.Rngs):
        self.time_dim = time_dim
        self.time_mlp = nnx.Linear(time_dim, channels, kernel_init=INIT, rngs=rngs)
        self.inc = nnx.Conv(1, channels, kernel_size=(3, 3), kernel_init=INIT, rngs=rngs)
        self.down = nnx.Conv(
            channels, 2 * channels, kernel_size=(3, 3), strides=(2, 2), kernel_init=INIT, rngs=rngs
        )
        self.norm = nnx.GroupNorm(2 * channels, num_groups=2, rngs=rngs)
        self.up = nnx.ConvTranspose(
            2 * channels, channels, kernel_size=(2, 2), strides=(2, 2), kernel_init=INIT, rngs=rngs
        )
        self.out = nnx.Conv(2 * channels, 1, kernel_size=(1, 1), kernel_init=INIT, rngs=rngs)

    def __call__(self, x, t):
        temb = self.time_mlp(timestep_embedding(t, self.time_dim))
        h1 = nnx.silu(self.inc(x) + temb[:, None, None, :])
        h2 = nnx.silu(self.norm(self.down(h1)))
        u = nnx.silu(self.up(h2))
        return self.out(jnp.concatenate([u, h1], axis=-1))


NOISE_STEPS = 50
_BETAS = np.linspace(1e-4, 0.02, NOISE_STEPS, dtype=np.float32)
ALPHA_BARS = jnp.asarray(np.cumprod(1.0 - _BETAS))


def diffusion_loss(model, x0, t, noise):
    a = ALPHA_BARS[t][:, None, None, None]
    xt = jnp.sqrt(a) * x0 + jnp.sqrt(1.0 - a) * noise
    return jnp.mean((model(xt, t) - noise) ** 2)


def q_sample(x0, t, key):
    """The forward (noising) process: x_t from x_0 at step t, with fresh noise from ``key``."""
    a = ALPHA_BARS[t][:, None, None, None]
    noise = jax.random.normal(key, x0.shape)
    return jnp.sqrt(a) * x0 + jnp.sqrt(1.0 - a) * noise, noise


@nnx.jit
def unet_train_step(model, optimizer, x0, key):
    t_key, n_key = jax.random.split(key)
    t = jax.random.randint(t_key, (x0.shape[0],), 0, NOISE_STEPS)
    noise = jax.random.normal(n_key, x0.shape)
    loss, grads = nnx.value_and_grad(diffusion_loss)(model, x0, t, noise)
    optimizer.update(model, grads)
    return loss


# ---------------------------------------------------------------------------------------------
# A data loader without drop_last: the last batch is short


class NumpyLoader:
    """Iterates ``(X[i:i+b], y[i:i+b])`` over the whole data set, like a DataLoader without drop_last."""

    def __init__(self, X: np.ndarray, y: np.ndarray, batch_size: int):
        self.X, self.y, self.batch_size = X, y, batch_size

    def __len__(self) -> int:
        return -(-len(self.X) // self.batch_size)

    def __iter__(self):
        for i in range(0, len(self.X), self.batch_size):
            yield self.X[i : i + self.batch_size], self.y[i : i + self.batch_size]


class MLP(nnx.Module):
    def __init__(self, din: int = 8, width: int = 16, dout: int = 3, *, rngs: nnx.Rngs):
        self.linear1 = nnx.Linear(din, width, kernel_init=INIT, rngs=rngs)
        self.dropout = nnx.Dropout(0.1, rngs=rngs)
        self.linear2 = nnx.Linear(width, dout, kernel_init=INIT, rngs=rngs)

    def __call__(self, x):
        return self.linear2(self.dropout(nnx.relu(self.linear1(x))))


def mlp_loss_fn(model, batch):
    logits = model(batch[0])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean(), logits


# ---------------------------------------------------------------------------------------------
# Orbax checkpoints made by hand


def save_standard(model: nnx.Module, path: pathlib.Path) -> pathlib.Path:
    """``ocp.StandardCheckpointer().save(path, nnx.state(model))`` as the Flax guide shows."""
    import orbax.checkpoint as ocp

    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path.absolute(), nnx.state(model))
    checkpointer.wait_until_finished()
    checkpointer.close()
    return path


def save_with_manager(model: nnx.Module, directory: pathlib.Path, steps=(1, 2)) -> pathlib.Path:
    """A user's own ``ocp.CheckpointManager`` directory with numbered step folders."""
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=3)
    with ocp.CheckpointManager(directory.absolute(), options=options) as manager:
        for step in steps:
            manager.save(step, args=ocp.args.StandardSave(nnx.state(model)))
        manager.wait_until_finished()
    return directory
