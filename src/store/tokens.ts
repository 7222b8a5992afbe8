/**
 * Bearer tokens: login tokens (sessions) and named API tokens. Only a token's hash is stored; the secret
 * is shown once, when it is made. Whether a token may authenticate is decided in the server
 * (`server/token-auth.ts`) from what `findToken` returns, expiry judged by the store's clock.
 */
import type { StoreContext } from './context.js';
import type { Database } from './schema.js';
import { toUser, type UserRecord } from './users.js';

export interface TokenRecord {
  id: string;
  user: string;
  name: string;
  /** `login`: CLI sign-in; `api`: named; `session`: a portal browser session (sent as a cookie). */
  kind: 'login' | 'api' | 'session';
  createdAt: number;
  expiresAt: number | null;
  lastUsedAt: number | null;
  revoked: boolean;
}

/** What `findToken` found: the token, its user, and whether the token has expired by the store's clock. */
export interface FoundToken {
  token: TokenRecord;
  user: UserRecord;
  /** `expiresAt` is at or before the store's now. */
  expired: boolean;
}

function toToken(row: Omit<Database['api_tokens'], 'token_hash'>): TokenRecord {
  return {
    id: row.id,
    user: row.user_name,
    name: row.name,
    kind: row.kind,
    createdAt: row.created_at,
    expiresAt: row.expires_at,
    lastUsedAt: row.last_used_at,
    revoked: row.revoked === 1,
  };
}

export class TokenStore {
  constructor(private readonly ctx: StoreContext) {}

  async createToken(
    token: Omit<TokenRecord, 'lastUsedAt' | 'revoked'> & { tokenHash: string },
  ): Promise<void> {
    await this.ctx.db
      .insertInto('api_tokens')
      .values({
        id: token.id,
        user_name: token.user,
        name: token.name,
        kind: token.kind,
        token_hash: token.tokenHash,
        created_at: token.createdAt,
        expires_at: token.expiresAt,
        last_used_at: null,
        revoked: 0,
      })
      .execute();
  }

  /**
   * The token with this hash and its user, and whether it has expired (by the store's clock). Revocation
   * and disabled users are the caller's checks, with what is returned.
   */
  async findToken(tokenHash: string): Promise<FoundToken | undefined> {
    const row = await this.ctx.db
      .selectFrom('api_tokens as t')
      .innerJoin('users as u', 'u.name', 't.user_name')
      .select([
        't.id',
        't.user_name',
        't.name as token_name',
        't.kind',
        't.created_at as token_created_at',
        't.expires_at',
        't.last_used_at',
        't.revoked',
        'u.name',
        'u.role',
        'u.password_hash',
        'u.disabled',
        'u.created_at',
        'u.source',
        'u.deleted_at',
      ])
      .where('t.token_hash', '=', tokenHash)
      .executeTakeFirst();
    if (!row) return undefined;
    const token = toToken({ ...row, name: row.token_name, created_at: row.token_created_at });
    const expired = token.expiresAt !== null && token.expiresAt <= this.ctx.clock();
    return { token, user: toUser(row), expired };
  }

  async touchToken(id: string, time: number): Promise<void> {
    await this.ctx.db.updateTable('api_tokens').set({ last_used_at: time }).where('id', '=', id).execute();
  }

  async listTokens(user: string, kind: TokenRecord['kind'] = 'api'): Promise<TokenRecord[]> {
    const rows = await this.ctx.db
      .selectFrom('api_tokens')
      .selectAll()
      .where('user_name', '=', user)
      .where('kind', '=', kind)
      .where('revoked', '=', 0)
      .orderBy('created_at')
      .execute();
    return rows.map(toToken);
  }

  /** A token by id (without its hash), or undefined. */
  async getToken(id: string): Promise<TokenRecord | undefined> {
    const row = await this.ctx.db
      .selectFrom('api_tokens')
      .selectAll()
      .where('id', '=', id)
      .executeTakeFirst();
    return row && toToken(row);
  }

  /**
   * Revokes `user`'s live login tokens and portal sessions, except `keep`: a changed password ends the
   * other sessions. Returns how many it revoked.
   */
  async revokeLoginTokens(user: string, keep?: string): Promise<number> {
    let query = this.ctx.db
      .updateTable('api_tokens')
      .set({ revoked: 1 })
      .where('user_name', '=', user)
      .where('kind', 'in', ['login', 'session'])
      .where('revoked', '=', 0);
    if (keep !== undefined) query = query.where('id', '!=', keep);
    const result = await query.executeTakeFirst();
    return Number(result.numUpdatedRows);
  }

  /** Revokes one of `user`'s tokens; false when there is no such live token. */
  async revokeToken(user: string, id: string): Promise<boolean> {
    const result = await this.ctx.db
      .updateTable('api_tokens')
      .set({ revoked: 1 })
      .where('id', '=', id)
      .where('user_name', '=', user)
      .where('revoked', '=', 0)
      .executeTakeFirst();
    return Number(result.numUpdatedRows) === 1;
  }
}
