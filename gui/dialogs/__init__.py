"""Dialogs (train and export dialogs are added by the model-workflow work)."""
