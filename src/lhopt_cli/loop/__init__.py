"""The library a user imports into a training loop: the Controller (controller.py), LhoptAdamW
(adamw.py), ReplaySchedule and schedule files, and the framework callbacks (integrations/)."""
