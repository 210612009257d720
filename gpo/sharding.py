"""All sharding choices in one place: one mesh, axis "data"; episodes split over it, parameters
replicated. The same code runs on 1 CPU, on simulated CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=8), on GPU/TPU and across hosts."""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def maybe_initialize_distributed() -> bool:
    """Join a multi-process run when the launcher says so: JAX_COORDINATOR_ADDRESS (host:port),
    JAX_NUM_PROCESSES and JAX_PROCESS_ID. CPU processes talk through gloo collectives."""
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if not address:
        return False
    if os.environ.get("JAX_PLATFORMS", "cpu") == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=address,
                               num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                               process_id=int(os.environ["JAX_PROCESS_ID"]))
    return True


def make_mesh(n_devices: int | None = None) -> Mesh:
    devices = jax.devices()
    if n_devices is not None:
        if n_devices > len(devices):
            raise ValueError(f"asked for {n_devices} devices, have {len(devices)}")
        devices = devices[:n_devices]
    return Mesh(np.array(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def data_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_split(batch_size: int, mesh: Mesh) -> None:
    """Episodes are split evenly over "data": refuse a batch that does not split."""
    n = mesh.shape[DATA_AXIS]
    if batch_size % n:
        raise ValueError(f"batch of {batch_size} episodes does not split over {n} devices; "
                         "choose a batch size divisible by the device count")


def put_batch(batch, mesh: Mesh):
    """A host batch (a pytree of NumPy arrays) -> global arrays split over "data". Every
    process holds the same host batch (episodes are seeded from (seed, step)) and contributes
    the shards it can address."""
    def put(value: np.ndarray) -> jax.Array:
        check_batch_split(value.shape[0], mesh)
        return jax.make_array_from_callback(value.shape, data_sharded(mesh),
                                            lambda index: value[index])
    return jax.tree.map(put, batch)
