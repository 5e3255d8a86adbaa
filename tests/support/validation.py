"""What the validation tests check against: the default limits, the project's own
templates, and the variables of a welcome email."""

from __future__ import annotations

from actors.domain.templates import TemplateRenderer
from config import PROJECT_ROOT, LimitsConfig

LIMITS = LimitsConfig()
RENDERER = TemplateRenderer(PROJECT_ROOT / "templates")
WELCOME = {"name": "Ada", "product": "Mailactors"}
