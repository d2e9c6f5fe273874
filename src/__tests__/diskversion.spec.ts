import { sameVersion, TakenChain, versionQuery, versionToTake } from '../diskversion';

const loaded = { last_modified: '2026-12-04T02:00:00.000001Z', hash: 'h0' };
const written = { last_modified: '2026-12-04T02:00:05.000002Z', hash: 'h1' };

function query(text: string | null): { [key: string]: string } {
  expect(text).not.toBeNull();
  return Object.fromEntries(new URLSearchParams(text ?? ''));
}

describe('versionQuery', () => {
  it("sends the page's version", () => {
    expect(query(versionQuery('dir/a b.ipynb', loaded, null))).toEqual({
      path: 'dir/a b.ipynb',
      last_modified: loaded.last_modified,
      hash: 'h0'
    });
  });

  it('sends the time alone where the server gives no hash', () => {
    expect(query(versionQuery('a.ipynb', { last_modified: 't', hash: undefined }, null))).toEqual(
      { path: 'a.ipynb', last_modified: 't' }
    );
  });

  it('asks nothing before the page holds a version', () => {
    expect(versionQuery('a.ipynb', null, null)).toBeNull();
    expect(versionQuery('a.ipynb', { last_modified: null, hash: null }, null)).toBeNull();
  });

  it("sends the chain's token only while the page holds the version it took", () => {
    const chain: TakenChain = { token: 'T', last_modified: written.last_modified, hash: 'h1' };
    expect(query(versionQuery('a.ipynb', written, chain)).chain).toBe('T');
    // The page saved since: its version is its own, the token no longer says anything.
    const saved = { last_modified: '2026-12-04T02:01:00Z', hash: 'h2' };
    expect(query(versionQuery('a.ipynb', saved, chain)).chain).toBeUndefined();
  });
});

describe('versionToTake', () => {
  it("takes the file's version when only the server wrote it since", () => {
    const answer = {
      path: 'a.ipynb',
      only_ours: true,
      ...written,
      hash_algorithm: 'sha256',
      token: 'T'
    };
    expect(versionToTake(answer)).toEqual({ ...written, hash_algorithm: 'sha256' });
  });

  it('keeps its own version otherwise (JupyterLab then asks)', () => {
    expect(versionToTake({ path: 'a.ipynb', only_ours: false })).toBeNull();
    expect(versionToTake({ path: 'a.ipynb', only_ours: true })).toBeNull();
  });
});

describe('sameVersion', () => {
  it('compares time and hash, a missing hash as none', () => {
    expect(sameVersion(loaded, { ...loaded })).toBe(true);
    expect(sameVersion(loaded, written)).toBe(false);
    expect(sameVersion({ last_modified: 't' }, { last_modified: 't', hash: null })).toBe(true);
    expect(sameVersion({ last_modified: 't', hash: 'x' }, { last_modified: 't' })).toBe(false);
  });
});
