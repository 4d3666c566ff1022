"""Blocking producer calls for plain code (Django, Flask, scripts): ``SyncProducer``."""

from meetq.sync._producer import SyncProducer, SyncPubSub

__all__ = ["SyncProducer", "SyncPubSub"]
