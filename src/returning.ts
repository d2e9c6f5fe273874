/**
 * A page that comes back saves with no "File Changed" dialog.
 *
 * While a page's kernel connection was cut (a sleeping laptop, a dropped network), the
 * server wrote the notebook's outputs into the file. The page still holds the file's old
 * modification time and hash, so JupyterLab would ask "File Changed" at its next save:
 * "Revert" would throw away the user's edits, and "Overwrite" looks as if it could throw
 * away the server's outputs. Before each save, and once the file is loaded, this asks
 * the server whether every change since the page's version was one of the server's own
 * writes; if so, the page takes the file's current version as its own and saves over it.
 * Nothing is lost by that save: the server's writes change only outputs and execution
 * counts, and its save guard gives a save that lacks captured outputs the outputs back.
 *
 * JupyterLab has no public way to update a document's idea of the disk version; this
 * uses the context's `_updateContentsModel` (JupyterLab 4 and Notebook 7), and does
 * nothing where it is missing (JupyterLab then asks, as without the extension).
 */
import { URLExt } from '@jupyterlab/coreutils';
import type { DocumentRegistry } from '@jupyterlab/docregistry';
import type { INotebookModel } from '@jupyterlab/notebook';
import { ServerConnection } from '@jupyterlab/services';

import {
  sameVersion,
  TakenChain,
  VersionAnswer,
  versionQuery,
  versionToTake
} from './diskversion';

/** Milliseconds a save waits for the server's answer before it goes ahead without it. */
const ANSWER_TIMEOUT = 5000;

type UpdateContentsModel = (model: object) => void;

export class ReturningTab {
  constructor(
    private readonly context: DocumentRegistry.IContext<INotebookModel>,
    private readonly serverSettings: ServerConnection.ISettings
  ) {
    const save = context.save.bind(context);
    context.save = async (): Promise<void> => {
      await this.takeServerVersion();
      return save();
    };
    // A page that loaded a version the server wrote can follow the server's later writes.
    void context.ready.then(() => this.takeServerVersion());
  }

  /** Take the file's version as the page's own if only the server changed it since. */
  async takeServerVersion(): Promise<void> {
    const context = this.context;
    const update = (context as unknown as { _updateContentsModel?: UpdateContentsModel })
      ._updateContentsModel;
    const model = context.contentsModel;
    if (context.isDisposed || context.model.collaborative || typeof update !== 'function') {
      return; // with collaboration the room saves, and keeps the version up to date
    }
    const query = versionQuery(context.localPath, model, this.chain);
    if (query === null || model === null) {
      return;
    }
    const answer = await this.ask(query);
    // Not if the page's version changed meanwhile (its own save, a revert). The
    // context hands out copies of its contents model: compare the versions.
    const current = context.contentsModel;
    if (!answer || context.isDisposed || !current || !sameVersion(current, model)) {
      return;
    }
    const taken = versionToTake(answer);
    if (taken === null) {
      return;
    }
    this.chain = {
      token: answer.token ?? '',
      last_modified: taken.last_modified ?? '',
      hash: taken.hash ?? null
    };
    if (!sameVersion(current, taken)) {
      update.call(context, { ...current, ...taken });
    }
  }

  private async ask(query: string): Promise<VersionAnswer | null> {
    const settings = this.serverSettings;
    const url = URLExt.join(settings.baseUrl, 'api/persist/file-version') + `?${query}`;
    const controller = new AbortController();
    const timer = window.setTimeout(() => controller.abort(), ANSWER_TIMEOUT);
    try {
      const response = await ServerConnection.makeRequest(
        url,
        { signal: controller.signal },
        settings
      );
      if (!response.ok) {
        // 404: no such file yet (a new notebook); 403: may not write; both leave it be.
        return null;
      }
      return (await response.json()) as VersionAnswer;
    } catch (error) {
      console.warn('jupyter-persist: could not ask for the file version', error);
      return null;
    } finally {
      window.clearTimeout(timer);
    }
  }

  private chain: TakenChain | null = null;
}
