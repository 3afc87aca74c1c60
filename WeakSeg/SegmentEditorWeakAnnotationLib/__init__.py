"""The "Weak annotation" Segment Editor effect of WeakSeg (registered by WeakSeg.py at startup)."""

from SegmentEditorEffects.AbstractScriptedSegmentEditorAutoCompleteEffect import (
    AbstractScriptedSegmentEditorAutoCompleteEffect,
)
from SegmentEditorEffects.AbstractScriptedSegmentEditorEffect import AbstractScriptedSegmentEditorEffect

from .SegmentEditorEffect import SegmentEditorEffect

__all__ = ["AbstractScriptedSegmentEditorAutoCompleteEffect", "AbstractScriptedSegmentEditorEffect",
           "SegmentEditorEffect"]
