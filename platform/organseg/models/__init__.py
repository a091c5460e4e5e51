"""The ensemble's model zoo: a registry of 2D members that map N×C×H×W images to N×classes×H×W
multi-label sigmoid logits (one channel per organ, no background), plus the cGAN discriminator.

Use :func:`create_member`; see ``docs/adding-a-member.md`` for adding one.
"""

from organseg.models.registry import (
    MEMBER_MODULES,
    MemberSpec,
    create_member,
    get_member_spec,
    list_members,
    member_names,
    register_member,
)

__all__ = [
    "MEMBER_MODULES",
    "MemberSpec",
    "create_member",
    "get_member_spec",
    "list_members",
    "member_names",
    "register_member",
]
