-- 0009_workspace_token_kinds: minting a workspace token and booting the workspace no longer revoke
-- each other's token.
--
-- 0001 allowed one live token per workspace, and both POST /workspaces/{id}/token and every boot
-- (which gives the guest a fresh token) rotated it: starting a workspace revoked the token its
-- platform had just minted, and minting one cut off the agent running in the VM. A token now has a
-- kind: 'api' (minted through the API and shown once) or 'boot' (given to the guest at each boot).
-- Each kind has at most one live token and rotates on its own. Tokens live before this migration
-- become 'api' tokens: a VM running across the upgrade loses its token at the next mint, as before.

ALTER TABLE workspace_tokens
    ADD COLUMN kind text NOT NULL DEFAULT 'api' CHECK (kind IN ('api', 'boot'));

DROP INDEX workspace_tokens_one_live;
CREATE UNIQUE INDEX workspace_tokens_one_live ON workspace_tokens (workspace_id, kind)
    WHERE revoked_at IS NULL;
