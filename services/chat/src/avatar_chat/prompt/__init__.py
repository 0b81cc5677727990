"""The role-play prompt: a character, the user, the scenario and the lore made into messages
(pure functions). `builder` holds the order; `macros` and `examples` its two text parts."""
