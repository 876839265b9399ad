-- The user's sign-in history ("known"): one field per device family
-- ('d:'), country ('c:') and address group ('a:'), at most KNOWN_MAX, shared
-- by open.lua (which compares a sign-in with it) and confirm.lua (which adds
-- what a confirmed session was new with).
local KNOWN_MAX = 100
