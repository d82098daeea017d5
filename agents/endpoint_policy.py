"""Actor-critic policies with one network shared by every endpoint (SB3 and sb3-contrib).

A dense MLP over the flat observation learns each endpoint's rule separately, from twelve times
fewer samples of it at paper scale. ``EndpointPolicy`` (PPO, A2C) and ``MaskableEndpointPolicy``
(MaskablePPO) instead read each endpoint's own part of ``SageServeEnv``'s observation (its
instances, utilization, queues, arrival rates, forecast, TTFT, SLO misses), its region's free
and spot servers, the time features and, with ``endpoint_ids``, one-hots of its region and
model; one encoder embeds every endpoint alike, the mean of the embeddings is the context each
endpoint's head sees beside its own, and one head gives every endpoint its logits over its
instance changes. The critic reads the mean and the max of the embeddings. Without
``endpoint_ids`` the network is equivariant under permutations of the endpoints.
``hold_prior`` adds to the initial logit of "no change", so that the untrained policy mostly
holds its allocation (a uniform one is a random walk of the fleet) and explores around it.
``week_phase=False`` makes the network read the sine and cosine of the week as 0, their
normalized mean: an agent trained on one weekday has seen a sliver of the week's phase, and on
the other days those inputs fall many deviations outside it. The weights are the same either
way, so a trained agent can be loaded or trained on without them (``train.py resume=...
hyperparams.policy_kwargs={hidden: 32, week_phase: false}``).

Select with ``policy: agents.endpoint_policy:MaskableEndpointPolicy`` in a hyperparameter file
(``policy_kwargs: {hidden: 64}``); the layout comes from the spaces, so nothing else is told.
"""

from __future__ import annotations

from functools import partial
from typing import Tuple

import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from sageserve_env.env.sageserve_env import REGION_ENTRIES, TIME_FEATURES, WORLD_ENTRIES, observation_space


def endpoint_layout(flat_size: int, n_endpoints: int) -> Tuple[np.ndarray, np.ndarray, int, int]:
    """(per-endpoint indices (E, F_e), global indices (F_g,), regions, models) of the flat
    observation of ``SageServeEnv`` with ``n_endpoints`` endpoints and ``flat_size`` numbers,
    in ``gymnasium.spaces.flatten``'s order; the region count is the one that gives that size."""
    for n_regions in range(1, n_endpoints + 1):
        if n_endpoints % n_regions:
            continue
        n_models = n_endpoints // n_regions
        space = observation_space(n_regions, n_models)
        if spaces.flatdim(space) == flat_size:
            break
    else:
        raise ValueError(f"no SageServeEnv observation of {n_endpoints} endpoints has {flat_size} numbers: the "
                         "endpoint policies need SageServeEnv's flattened observation (FlattenObservation)")
    per_endpoint, shared, offset = [], [], 0
    for key, sub in space.spaces.items():
        size = int(np.prod(sub.shape))
        index = offset + np.arange(size).reshape(sub.shape)
        offset += size
        if key in WORLD_ENTRIES:
            shared.append(index.ravel())
        elif key in REGION_ENTRIES:  # its region's
            per_endpoint.append(np.repeat(index, n_models, axis=0).reshape(n_endpoints, -1))
        else:  # the endpoint's own, (regions, models, ...)
            per_endpoint.append(index.reshape(n_endpoints, -1))
    return np.concatenate(per_endpoint, axis=1), np.concatenate(shared), n_regions, n_models


class EndpointNetwork(nn.Module):
    """The shared encoder, actor and critic trunks (SB3's ``mlp_extractor``): the actor's latent
    is (batch, endpoints x hidden), the critic's (batch, 2 hidden)."""

    def __init__(self, flat_size: int, n_endpoints: int, hidden: int, endpoint_ids: bool,
                 week_phase: bool = True) -> None:
        super().__init__()
        own, shared, n_regions, n_models = endpoint_layout(flat_size, n_endpoints)
        self.register_buffer("own", torch.as_tensor(own, dtype=torch.long), persistent=False)
        self.register_buffer("shared", torch.as_tensor(shared, dtype=torch.long), persistent=False)
        read = np.ones(len(shared), dtype=np.float32)  # the world's entries: the time features
        if not week_phase:
            read[[TIME_FEATURES.index("sin_week"), TIME_FEATURES.index("cos_week")]] = 0.0
        self.register_buffer("shared_read", torch.as_tensor(read), persistent=False)
        ids = np.zeros((n_endpoints, 0))
        if endpoint_ids:
            ids = np.concatenate([np.repeat(np.eye(n_regions), n_models, axis=0),
                                  np.tile(np.eye(n_models), (n_regions, 1))], axis=1)
        self.register_buffer("ids", torch.as_tensor(ids, dtype=torch.float32), persistent=False)
        n_in = own.shape[1] + len(shared) + ids.shape[1]
        self.n_endpoints, self.hidden = n_endpoints, hidden
        self.encoder = nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.actor = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.Tanh())
        self.critic = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.Tanh())
        self.latent_dim_pi, self.latent_dim_vf = n_endpoints * hidden, hidden

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        b, e = features.shape[0], self.n_endpoints
        world = features[:, self.shared] * self.shared_read
        x = torch.cat([features[:, self.own], world.unsqueeze(1).expand(b, e, -1),
                       self.ids.unsqueeze(0).expand(b, e, -1)], dim=2)
        return self.encoder(x)  # (batch, endpoints, hidden)

    def _actor(self, h: torch.Tensor) -> torch.Tensor:
        context = h.mean(dim=1, keepdim=True).expand_as(h)
        return self.actor(torch.cat([h, context], dim=2)).flatten(1)

    def _critic(self, h: torch.Tensor) -> torch.Tensor:
        return self.critic(torch.cat([h.mean(dim=1), h.amax(dim=1)], dim=1))

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        return self._actor(self.embed(features))

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        return self._critic(self.embed(features))

    def forward(self, features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        h = self.embed(features)  # once for both heads
        return self._actor(h), self._critic(h)


class EndpointHead(nn.Module):
    """One linear map from an endpoint's latent to its logits, applied to every endpoint."""

    def __init__(self, n_endpoints: int, hidden: int, choices: int) -> None:
        super().__init__()
        self.n_endpoints, self.hidden = n_endpoints, hidden
        self.linear = nn.Linear(hidden, choices)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.linear(latent.view(-1, self.n_endpoints, self.hidden)).flatten(1)


class EndpointMixin:
    """Replaces the MLP trunk and the action layer of an SB3 actor-critic policy."""

    def __init__(self, *args, hidden: int = 64, endpoint_ids: bool = True, hold_prior: float = 0.0,
                 week_phase: bool = True, **kwargs) -> None:
        self.hidden, self.endpoint_ids, self.hold_prior = int(hidden), bool(endpoint_ids), float(hold_prior)
        if not isinstance(week_phase, (bool, np.bool_)):  # bool("false") would be True
            raise ValueError(f"week_phase must be true or false, got {week_phase!r}")
        self.week_phase = bool(week_phase)
        super().__init__(*args, **kwargs)

    def _build_mlp_extractor(self) -> None:
        nvec = np.asarray(self.action_space.nvec)
        if not isinstance(self.action_space, spaces.MultiDiscrete) or len(set(nvec.tolist())) != 1:
            raise ValueError(f"the endpoint policies need one MultiDiscrete choice per endpoint, got {self.action_space}")
        self.mlp_extractor = EndpointNetwork(self.features_dim, len(nvec), self.hidden, self.endpoint_ids,
                                             self.week_phase)

    def _build(self, lr_schedule) -> None:
        super()._build(lr_schedule)
        net = self.mlp_extractor
        self.action_net = EndpointHead(net.n_endpoints, net.hidden, int(self.action_space.nvec[0]))
        if self.ortho_init:
            self.action_net.apply(partial(self.init_weights, gain=0.01))
        with torch.no_grad():  # the middle choice is "no change": start by holding, explore around it
            self.action_net.linear.bias[int(self.action_space.nvec[0]) // 2] += self.hold_prior
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict:
        return {**super()._get_constructor_parameters(), "hidden": self.hidden, "endpoint_ids": self.endpoint_ids,
                "hold_prior": self.hold_prior, "week_phase": self.week_phase}


class EndpointPolicy(EndpointMixin, ActorCriticPolicy):
    """``ActorCriticPolicy`` (PPO, A2C) with the shared endpoint network."""


class MaskableEndpointPolicy(EndpointMixin, MaskableActorCriticPolicy):
    """``MaskableActorCriticPolicy`` (MaskablePPO) with the shared endpoint network."""
