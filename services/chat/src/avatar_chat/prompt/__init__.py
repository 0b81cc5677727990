"""The role-play prompt: a character, the user, the scenario and the lore made into messages
(pure functions). `builder` holds the order, `examples` reads example dialogue; the macros are
`avatar_shared.macros`, shared with the characters service's greetings."""
