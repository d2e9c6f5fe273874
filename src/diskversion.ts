/**
 * Which version of its file a page holds, and when it may take the version the server
 * wrote while the page was away. Pure: no JupyterLab, no DOM (unit-tested with jest).
 *
 * JupyterLab keeps the file's `last_modified` and `hash` from its last load or save and,
 * before each save, compares them with the file's: a difference opens "File Changed".
 * The server's `GET /api/persist/file-version` (see `jupyter_persist/storage/returning.py`) says
 * whether every change since the page's version was one of the extension's own writes.
 */

/** The part of a contents model that JupyterLab compares before a save. */
export interface FileVersion {
  last_modified?: string | null;
  hash?: string | null;
  hash_algorithm?: string | null;
}

/** The server's answer. */
export interface VersionAnswer {
  path: string;
  only_ours: boolean;
  last_modified?: string;
  hash?: string | null;
  hash_algorithm?: string | null;
  token?: string;
}

/** A chain of the server's writes, and the version of it the page took. */
export interface TakenChain {
  token: string;
  last_modified: string;
  hash: string | null;
}

/** Whether two versions are the same one, as the page holds them. */
export function sameVersion(a: FileVersion, b: FileVersion): boolean {
  return (
    (a.last_modified ?? null) === (b.last_modified ?? null) && (a.hash ?? null) === (b.hash ?? null)
  );
}

/**
 * The query of `GET /api/persist/file-version` for a page holding `model`, or null when
 * the page holds no version yet. The chain's token goes along only while the page still
 * holds the version it took of that chain (a save of its own starts another).
 */
export function versionQuery(
  path: string,
  model: FileVersion | null | undefined,
  chain: TakenChain | null
): string | null {
  if (!model || (!model.last_modified && !model.hash)) {
    return null;
  }
  const params = new URLSearchParams({ path });
  if (model.last_modified) {
    params.set('last_modified', model.last_modified);
  }
  if (model.hash) {
    params.set('hash', model.hash);
  }
  if (chain && sameVersion(model, chain)) {
    params.set('chain', chain.token);
  }
  return params.toString();
}

/**
 * What the page should hold after the answer: the file's version when only the server
 * wrote it since, else null (keep what it holds; JupyterLab then asks, rightly).
 */
export function versionToTake(answer: VersionAnswer): FileVersion | null {
  if (!answer.only_ours || !answer.last_modified) {
    return null;
  }
  return {
    last_modified: answer.last_modified,
    hash: answer.hash ?? null,
    hash_algorithm: answer.hash_algorithm ?? null
  };
}
