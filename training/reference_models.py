"""Tiny torch modules behind the reference bundle (imported only by make_reference_bundle).

These are small stand-ins that satisfy the bundle contract of every role (see
`models/README.md`), not the paper's architectures (DINOv2 + T5-XXL + ~200M-parameter
transformers). torch is imported at module level here, so nothing outside the export tool
may import this module: torch is an optional dependency (`pip install .[export]`).

Attention is written with plain matmuls rather than `nn.MultiheadAttention` so that the
legacy ONNX exporter emits portable ops, and so that one set of decoder weights can be
exported three ways (plain, with `expert_tokens`, with a key/value cache).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

#: Additive attention bias for masked positions (finite, so an all-masked row gives a
#: uniform softmax instead of NaN).
MASKED = -1e9


class ConvStem(nn.Module):
    """Image [B,3,96,128] -> feature map [B,channels,12,16] (two strided convolutions)."""

    def __init__(self, channels: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, kernel_size=4, stride=4)
        self.conv2 = nn.Conv2d(16, channels, kernel_size=3, stride=2, padding=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(image))))


class MaskNet(nn.Module):
    """Per-pixel class logits at full resolution: image [B,3,H,W] -> mask_logits [B,C,H,W].

    A small U-Net: a full-resolution branch keeps object edges; half- and quarter-resolution
    branches (strided, then dilated convolutions, receptive field about 30 px) give the
    context that tells a white cup from the white gripper fingers. Coarse features are
    upsampled (nearest) and concatenated with the finer ones. H and W must be multiples of 4.
    """

    def __init__(self, num_classes: int, width: int = 8, half: int = 16, quarter: int = 24):
        super().__init__()
        self.full = nn.Conv2d(3, width, kernel_size=3, padding=1)
        self.down_half = nn.Conv2d(width, half, kernel_size=3, stride=2, padding=1)
        self.context_half = nn.Conv2d(half, half, kernel_size=3, padding=2, dilation=2)
        self.down_quarter = nn.Conv2d(half, quarter, kernel_size=3, stride=2, padding=1)
        self.context_quarter = nn.Conv2d(quarter, quarter, kernel_size=3, padding=2, dilation=2)
        self.merge_half = nn.Conv2d(half + quarter, half, kernel_size=3, padding=1)
        self.head = nn.Conv2d(width + half, num_classes, kernel_size=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        full = F.relu(self.full(image))
        half = F.relu(self.context_half(F.relu(self.down_half(full))))
        quarter = F.relu(self.context_quarter(F.relu(self.down_quarter(half))))
        quarter = F.interpolate(quarter, scale_factor=2.0, mode="nearest")
        half = F.relu(self.merge_half(torch.cat([half, quarter], dim=1)))
        half = F.interpolate(half, scale_factor=2.0, mode="nearest")
        return self.head(torch.cat([full, half], dim=1))


def masked_mean_tokens(sequence: torch.Tensor) -> torch.Tensor:
    """Mean over the non-zero rows of [B,L,E] (instruction embeddings are zero-padded)."""
    present = (sequence.abs().sum(dim=-1, keepdim=True) > 0).to(sequence.dtype)
    return (sequence * present).sum(dim=1) / present.sum(dim=1).clamp(min=1.0)


class Planner(nn.Module):
    """Masked top image + instruction + previous affordances -> keypoints, arm_active, done."""

    def __init__(self, keypoints: int, chain: int, instruction_dim: int, hidden: int = 128):
        super().__init__()
        self.keypoints = keypoints
        self.stem = ConvStem(16)
        self.image_proj = nn.Linear(16 * 6 * 8, hidden)
        self.instruction_proj = nn.Linear(instruction_dim, 64)
        self.prev_proj = nn.Linear(chain * 2 * keypoints * 2 + chain, 64)
        self.trunk = nn.Sequential(nn.Linear(hidden + 128, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.keypoint_head = nn.Linear(hidden, 2 * keypoints * 2)
        self.arm_head = nn.Linear(hidden, 2)
        self.done_head = nn.Linear(hidden, 1)

    def forward(self, top_image, instruction, prev_affordance, prev_valid):
        features = F.avg_pool2d(self.stem(top_image), kernel_size=2).flatten(1)
        valid = prev_valid.reshape(prev_valid.shape[0], -1, 1, 1, 1)
        previous = torch.cat([(prev_affordance * valid).flatten(1), prev_valid], dim=1)
        hidden = self.trunk(torch.cat([
            F.relu(self.image_proj(features)),
            F.relu(self.instruction_proj(masked_mean_tokens(instruction))),
            F.relu(self.prev_proj(previous)),
        ], dim=1))
        keypoints = torch.sigmoid(self.keypoint_head(hidden)).reshape(-1, 2, self.keypoints, 2)
        return keypoints, torch.sigmoid(self.arm_head(hidden)), torch.sigmoid(self.done_head(hidden)).reshape(-1)


class Validator(nn.Module):
    """Top + wrist image, affordance and normalised joint state -> P(affordance achieved)."""

    def __init__(self, keypoints: int, hidden: int = 128):
        super().__init__()
        self.stem = ConvStem(16)
        self.mlp = nn.Sequential(
            nn.Linear(16 + 16 + keypoints * 2 + 7, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 1),
        )

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """Globally pooled stem features of one image batch: [B, 16]."""
        return self.stem(image).mean(dim=(2, 3))

    def forward(self, top_image, wrist_image, affordance, joint_state):
        return self.from_features(self.features(top_image), self.features(wrist_image), affordance, joint_state)

    def from_features(self, top_features, wrist_features, affordance, joint_state):
        """Probability from pre-computed image features (training with a frozen stem)."""
        logit = self.mlp(torch.cat([top_features, wrist_features, affordance.flatten(1), joint_state], dim=1))
        return torch.sigmoid(logit).reshape(-1)


class ActorEncoder(nn.Module):
    """Observation -> context tokens [B,M,D].

    Tokens: 4 pooled wrist-image cells, 4 pooled top-image cells, one per keypoint, one per
    joint of the state (its value times a learned vector plus a joint embedding), the
    instruction, and 7 fused (affordance, state) tokens, one per joint; M = 23 + P. The
    per-joint tokens let the decoder read a joint's state and motion where it writes that
    joint's FAST coefficients (against one state token and one fused token, this halves
    the first-step error of a chunk at the same training budget).
    """

    def __init__(self, keypoints: int, instruction_dim: int, dim: int = 64, joints: int = 7):
        super().__init__()
        self.joints = joints
        self.wrist_stem = ConvStem(32)
        self.top_stem = ConvStem(32)
        self.wrist_proj = nn.Linear(32, dim)
        self.top_proj = nn.Linear(32, dim)
        self.keypoint_proj = nn.Linear(2, dim)
        self.keypoint_index = nn.Parameter(torch.zeros(keypoints, dim))
        self.joint_value = nn.Parameter(torch.randn(joints, dim) * 0.5)
        self.joint_index = nn.Parameter(torch.zeros(joints, dim))
        self.instruction_proj = nn.Linear(instruction_dim, dim)
        self.fused = nn.Sequential(nn.Linear(keypoints * 2 + joints, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                                   nn.Linear(256, joints * dim))
        self.norm = nn.LayerNorm(dim)

    @staticmethod
    def cells(stem: nn.Module, image: torch.Tensor) -> torch.Tensor:
        # 12x16 feature map -> 2x2 cells -> 4 tokens of `channels`.
        pooled = F.avg_pool2d(stem(image), kernel_size=(6, 8))
        return pooled.flatten(2).transpose(1, 2)

    def forward(self, wrist_image, top_image, affordance, joint_state, instruction):
        return self.from_cells(self.cells(self.wrist_stem, wrist_image), self.cells(self.top_stem, top_image),
                               affordance, joint_state, instruction)

    def from_cells(self, wrist_cells, top_cells, affordance, joint_state, instruction):
        """Context from pre-computed image cells (training with frozen image stems)."""
        fused = self.fused(torch.cat([affordance.flatten(1), joint_state], dim=1))
        tokens = torch.cat([
            self.wrist_proj(wrist_cells),
            self.top_proj(top_cells),
            self.keypoint_proj(affordance) + self.keypoint_index,
            joint_state.unsqueeze(-1) * self.joint_value + self.joint_index,
            self.instruction_proj(masked_mean_tokens(instruction)).unsqueeze(1),
            fused.reshape(fused.shape[0], self.joints, -1),
        ], dim=1)
        return self.norm(tokens)


class Attention(nn.Module):
    """Multi-head attention with an optional key/value cache (self-attention) or memory."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def attend(self, q, k, v, bias):
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        if bias is not None:
            scores = scores + bias
        mixed = torch.matmul(torch.softmax(scores, dim=-1), v)
        mixed = mixed.transpose(1, 2)
        return self.out(mixed.reshape(mixed.shape[0], mixed.shape[1], self.heads * self.head_dim))


class DecoderLayer(nn.Module):
    """Pre-norm block: causal self-attention (cacheable), cross-attention to memory, MLP."""

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm_self = nn.LayerNorm(dim)
        self.self_attention = Attention(dim, heads)
        self.norm_cross = nn.LayerNorm(dim)
        self.cross_attention = Attention(dim, heads)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x, memory, memory_bias, causal_bias, past_key=None, past_value=None):
        attn = self.self_attention
        h = self.norm_self(x)
        key, value = attn.split(attn.key(h)), attn.split(attn.value(h))
        if past_key is not None:
            key = torch.cat([past_key, key], dim=2)
            value = torch.cat([past_value, value], dim=2)
        x = x + attn.attend(attn.split(attn.query(h)), key, value, causal_bias)
        cross = self.cross_attention
        h = self.norm_cross(x)
        x = x + cross.attend(cross.split(cross.query(h)), cross.split(cross.key(memory)),
                             cross.split(cross.value(memory)), memory_bias)
        return x + self.mlp(self.norm_mlp(x)), key, value


class ActorDecoder(nn.Module):
    """Autoregressive FAST-token decoder conditioned on context (+ optional expert tokens).

    Parameters
    ----------
    vocab_size : int
        FAST vocabulary V; the output has V + 2 logits (BOS = V, EOS = V + 1).
    max_positions, max_expert_tokens : int
        Sizes of the learned position tables (token stream and expert stream).
    """

    def __init__(self, vocab_size: int, dim: int = 64, layers: int = 2, heads: int = 4, hidden: int = 128,
                 max_positions: int = 64, max_expert_tokens: int = 128):
        super().__init__()
        self.vocab_size = vocab_size
        self.layers_count = layers
        self.heads = heads
        self.head_dim = dim // heads
        self.token_embedding = nn.Embedding(vocab_size + 2, dim)
        self.position_embedding = nn.Embedding(max_positions, dim)
        self.expert_embedding = nn.Embedding(vocab_size, dim)
        self.expert_position = nn.Embedding(max_expert_tokens, dim)
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, hidden) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size + 2)

    def memory(self, context, expert_tokens=None, expert_padding=None):
        """Cross-attention memory (context, then embedded expert tokens) and its key bias."""
        if expert_tokens is None:
            return context, None
        positions = torch.arange(expert_tokens.shape[1], device=expert_tokens.device)
        expert = self.expert_embedding(expert_tokens) + self.expert_position(positions)
        memory = torch.cat([context, expert], dim=1)
        if expert_padding is None:
            return memory, None
        # Padding only exists in training batches; exported graphs never take this path.
        keep = torch.cat([torch.zeros(context.shape[:2], dtype=torch.bool), expert_padding], dim=1)
        return memory, (keep.to(context.dtype) * MASKED)[:, None, None, :]

    def hidden_states(self, tokens, memory, memory_bias, past_key=None, past_value=None):
        """Run the stack on new `tokens` after `past` cached positions; also return the cache."""
        # Positions come from tensor ops (cumsum of ones), not Python ints from `.shape`, so
        # the traced ONNX graph keeps them dynamic in both the new and the cached length.
        new_ones = torch.ones_like(tokens[0], dtype=memory.dtype)
        past_ones = new_ones[:0] if past_key is None else torch.ones_like(past_key[0, 0, 0, :, 0])
        key_positions = torch.cumsum(torch.cat([past_ones, new_ones]), dim=0) - 1
        new_positions = torch.cumsum(new_ones, dim=0) - 1 + past_ones.sum()
        causal_bias = (key_positions[None, :] > new_positions[:, None]).to(memory.dtype) * MASKED
        x = self.token_embedding(tokens) + self.position_embedding(new_positions.to(torch.int64))
        keys, values = [], []
        for index, layer in enumerate(self.layers):
            x, key, value = layer(
                x, memory, memory_bias, causal_bias,
                None if past_key is None else past_key[index],
                None if past_value is None else past_value[index],
            )
            keys.append(key)
            values.append(value)
        return self.norm(x), torch.stack(keys), torch.stack(values)

    def forward(self, context, tokens, expert_tokens=None, expert_padding=None):
        """Teacher-forcing logits for every position: [B,S,V+2]."""
        memory, memory_bias = self.memory(context, expert_tokens, expert_padding)
        hidden, _, _ = self.hidden_states(tokens, memory, memory_bias)
        return self.head(hidden)


class DecoderStep(nn.Module):
    """Export wrapper: (context, tokens) -> next-token logits [B,V+2]."""

    def __init__(self, decoder: ActorDecoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, context, tokens):
        hidden, _, _ = self.decoder.hidden_states(tokens, context, None)
        return self.decoder.head(hidden[:, -1])


class DecoderStepWithExpert(nn.Module):
    """Export wrapper: (context, tokens, expert_tokens) -> next-token logits [B,V+2]."""

    def __init__(self, decoder: ActorDecoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, context, tokens, expert_tokens):
        memory, bias = self.decoder.memory(context, expert_tokens)
        hidden, _, _ = self.decoder.hidden_states(tokens, memory, bias)
        return self.decoder.head(hidden[:, -1])


class DecoderStepWithCache(nn.Module):
    """Export wrapper: (context, new tokens, past_key, past_value) -> logits, present_key, present_value.

    Cache tensors are [n_layers, B, heads, S, head_dim]; S grows by the number of new tokens.
    """

    def __init__(self, decoder: ActorDecoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, context, tokens, past_key, past_value):
        hidden, key, value = self.decoder.hidden_states(tokens, context, None, past_key, past_value)
        return self.decoder.head(hidden[:, -1]), key, value


class Denoiser(nn.Module):
    """Diffusion action expert: (noisy chunk [B,T,7], timestep [B], context) -> eps [B,T,7].

    The network predicts the clean chunk as coefficients of the first `dct_rows` orthonormal
    DCT-II basis vectors (the synthetic chunks live exactly there, so the proposal is smooth
    by construction and FAST-encodes into a short sequence), then converts it to the
    epsilon the contract asks for with its own training schedule:
    ``eps = (x_t - sqrt(a_t) x0) / sqrt(1 - a_t)``. A DDIM sampler that inverts this with the
    same `a_t` recovers the predicted clean chunk.
    """

    def __init__(self, horizon: int, action_dim: int, alphas_cumprod, dct_rows: int = 2, context_dim: int = 64,
                 hidden: int = 256, time_dim: int = 32):
        super().__init__()
        self.horizon = horizon
        self.action_dim = action_dim
        self.dct_rows = dct_rows
        half = time_dim // 2
        self.register_buffer("frequencies", torch.exp(-math.log(1000.0) * torch.arange(half) / half), persistent=False)
        self.register_buffer("alphas_cumprod", torch.as_tensor(alphas_cumprod, dtype=torch.float32), persistent=False)
        t = torch.arange(horizon, dtype=torch.float64)[:, None]
        k = torch.arange(dct_rows, dtype=torch.float64)[None, :]
        basis = torch.cos(math.pi * k * (2 * t + 1) / (2 * horizon)) * math.sqrt(2.0 / horizon)
        basis[:, 0] = 1.0 / math.sqrt(horizon)
        self.register_buffer("basis", basis.to(torch.float32), persistent=False)
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, 64), nn.SiLU())
        self.context_proj = nn.Linear(context_dim, 64)
        self.mlp = nn.Sequential(
            nn.Linear(horizon * action_dim + 128, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, dct_rows * action_dim),
        )

    def predict_clean(self, noisy_actions, timestep, context):
        """The network's clean-chunk estimate x0 [B,T,7]."""
        angles = timestep[:, None] * self.frequencies[None, :]
        time = self.time_mlp(torch.cat([torch.sin(angles), torch.cos(angles)], dim=1))
        features = torch.cat([noisy_actions.flatten(1), time, F.silu(self.context_proj(context.mean(dim=1)))], dim=1)
        coefficients = self.mlp(features).reshape(-1, self.dct_rows, self.action_dim)
        return torch.matmul(self.basis, coefficients)

    def forward(self, noisy_actions, timestep, context):
        steps = self.alphas_cumprod.shape[0]
        index = torch.clamp(torch.round(timestep), 0, steps - 1).to(torch.int64)
        alpha = self.alphas_cumprod[index][:, None, None]
        clean = self.predict_clean(noisy_actions, timestep, context)
        return (noisy_actions - alpha.sqrt() * clean) / (1 - alpha).sqrt()
