"""Broadcast between processes: ``PubSub`` over a backend's ``PubSubTransport``."""

from meetq.broadcast._pubsub import PubSub

__all__ = ["PubSub"]
