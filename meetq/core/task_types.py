"""The guide's task types as one string enum, ``TaskType``.

The seed guide names thirteen ``TaskType*`` constants (``TaskTypeSpeechRecognition`` ...).
``TaskType`` gives them a home with completion and typo checking, while every place that
takes a message, event or task type keeps taking plain strings: a ``StrEnum`` member *is*
a ``str`` equal to its value, and the value types store it as the plain value (see
``plain_str`` in ``meetq.core._validation``), so it serializes and compares as the string.
"""

from __future__ import annotations

import enum

__all__ = ["TaskType"]


class TaskType(enum.StrEnum):
    """The guide's task and message types; each member equals its plain string value."""

    SPEECH_RECOGNITION = "speech_recognition"
    EMOTION_DETECTION = "emotion_detection"
    SYNTHESIS_DETECTION = "synthesis_detection"
    AUDIO_DENOISING = "audio_denoising"
    VIDEO_ENHANCEMENT = "video_enhancement"
    TEXT_TO_SPEECH = "text_to_speech"
    MEDIA_PROCESSING = "media_processing"
    STREAM_CONTROL = "stream_control"
    RECORDING = "recording"
    MEETING_CONTROL = "meeting_control"
    USER_MANAGEMENT = "user_management"
    SIGNALING = "signaling"
    WEBRTC_NEGOTIATION = "webrtc_negotiation"
