"""Tunables: desired value, apply, read back. See base.py."""
from .base import FileSetting, Setting, SettingResult, apply_settings, settings_table

__all__ = ["Setting", "SettingResult", "FileSetting", "apply_settings", "settings_table"]
