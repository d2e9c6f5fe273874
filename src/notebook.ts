/**
 * One open notebook following the server's captured outputs.
 *
 * JupyterLab shows the output of an execution only in the page that started it: a page
 * reopened while a cell runs shows that cell empty. This follows the notebook's
 * executions through the extension's websocket (`/api/persist/follow?path=`) and puts
 * the outputs of executions the page did not start into their cells, with the running
 * prompt, until they end. The page then saves them as it saves anything.
 *
 * One follower per document context: every view of the notebook shares its model.
 */
import { URLExt } from '@jupyterlab/coreutils';
import type { ICodeCellModel } from '@jupyterlab/cells';
import type { DocumentRegistry } from '@jupyterlab/docregistry';
import type * as nbformat from '@jupyterlab/nbformat';
import { NotebookActions, type INotebookModel, type Notebook } from '@jupyterlab/notebook';
import type { ServerConnection } from '@jupyterlab/services';
import { Signal } from '@lumino/signaling';

import {
  FollowMessage,
  FollowState,
  Output,
  reconnectDelay,
  sameOutputs,
  shouldShow
} from './follow';

export class NotebookFollower {
  readonly state = new FollowState();
  /** Emitted whenever the state or the connection changed. */
  readonly changed = new Signal<this, void>(this);
  connected = false;

  constructor(
    private readonly context: DocumentRegistry.IContext<INotebookModel>,
    private readonly serverSettings: ServerConnection.ISettings
  ) {
    context.pathChanged.connect(this.onPathChanged, this);
    context.disposed.connect(() => this.dispose());
    NotebookActions.executionScheduled.connect(this.onExecutionScheduled, this);
    // Opened as soon as the document exists, before the file loads: from then until
    // the page's kernel connects, the server leaves the file to this page (no "File
    // Changed" at its next save).
    this.connect();
  }

  get isDisposed(): boolean {
    return this.disposed;
  }

  dispose(): void {
    if (this.disposed) {
      return;
    }
    this.disposed = true;
    NotebookActions.executionScheduled.disconnect(this.onExecutionScheduled, this);
    window.clearTimeout(this.reconnectTimer);
    const socket = this.socket;
    this.socket = null;
    socket?.close();
    Signal.clearData(this);
  }

  private connect(): void {
    if (this.disposed) {
      return;
    }
    const settings = this.serverSettings;
    let url =
      URLExt.join(settings.wsUrl, 'api/persist/follow') +
      `?path=${encodeURIComponent(this.context.localPath)}`;
    // As JupyterLab's own kernel websocket: the token only where cookies do not reach.
    if (settings.appendToken && settings.token) {
      url += `&token=${encodeURIComponent(settings.token)}`;
    }
    const socket = new settings.WebSocket(url);
    this.socket = socket;
    socket.onmessage = event => {
      if (this.socket === socket) {
        this.onMessage(String(event.data));
      }
    };
    socket.onclose = () => {
      if (this.socket !== socket) {
        return;
      }
      this.socket = null;
      this.setConnected(false);
      this.failures += 1;
      this.reconnectTimer = window.setTimeout(
        () => this.connect(),
        reconnectDelay(this.failures)
      );
    };
  }

  /**
   * The page runs a cell itself: its own run owns the cell's outputs from now on
   * (JupyterLab has cleared them and adds the new run's), even while an earlier run by
   * another page still prints.
   */
  private onExecutionScheduled(
    _: unknown,
    args: { notebook: Notebook; cell: { model: { id: string } } }
  ): void {
    if (args.notebook.model === this.context.model) {
      const cellId = args.cell.model.id;
      this.ranHere.set(cellId, this.state.cells.get(cellId)?.msgId ?? null);
    }
  }

  private onPathChanged(): void {
    window.clearTimeout(this.reconnectTimer);
    const old = this.socket;
    this.socket = null;
    old?.close();
    this.connect();
  }

  private setConnected(connected: boolean): void {
    if (this.connected !== connected) {
      this.connected = connected;
      this.changed.emit();
    }
  }

  private onMessage(data: string): void {
    let message: FollowMessage;
    try {
      message = JSON.parse(data) as FollowMessage;
    } catch (error) {
      console.warn('jupyter-persist: unreadable message from the server', error);
      return;
    }
    const changed = this.state.apply(message);
    this.failures = 0;
    this.connected = true;
    changed.forEach(cellId => this.pending.add(cellId));
    this.showPending();
    this.changed.emit();
  }

  /** Put the pending cells' captured outputs into the model, once it is ready. */
  private showPending(): void {
    if (!this.context.isReady) {
      if (!this.waitingForReady) {
        this.waitingForReady = true;
        void this.context.ready.then(() => {
          this.waitingForReady = false;
          this.showPending();
        });
      }
      return;
    }
    const ownClientId = this.context.sessionContext.session?.kernel?.clientId;
    const pending = this.pending;
    this.pending = new Set();
    for (const cellModel of this.context.model.cells) {
      if (cellModel.type !== 'code' || !pending.has(cellModel.id)) {
        continue;
      }
      const cell = cellModel as ICodeCellModel;
      const captured = this.state.cells.get(cell.id);
      if (!captured) {
        this.release(cell);
        continue;
      }
      if (this.ranHere.has(cell.id)) {
        if (this.ranHere.get(cell.id) === captured.msgId) {
          continue; // the other page's run, still printing: this page's run owns the cell
        }
        this.ranHere.delete(cell.id);
      }
      if (!shouldShow(captured, ownClientId, this.state)) {
        continue;
      }
      this.show(
        cell,
        captured.outputs as nbformat.IOutput[],
        captured.running,
        captured.executionCount
      );
    }
  }

  private show(
    cell: ICodeCellModel,
    outputs: nbformat.IOutput[],
    running: boolean,
    count: number | null
  ): void {
    if (!sameOutputs(cell.outputs.toJSON() as Output[], outputs as Output[])) {
      // Whole, not edited in place: JupyterLab's stream merging keeps state that
      // partial edits leave stale.
      cell.outputs.fromJSON(outputs);
    }
    // As JupyterLab shows a run: no count and `[*]` while it runs (setting a count
    // marks the cell idle), the count once it is over.
    const executionCount = running ? null : count;
    if (cell.executionCount !== executionCount) {
      cell.executionCount = executionCount;
    }
    const executionState = running ? 'running' : 'idle';
    if (cell.executionState !== executionState) {
      cell.executionState = executionState;
    }
    if (running) {
      this.shownRunning.add(cell.id);
    } else {
      this.shownRunning.delete(cell.id);
    }
  }

  /** A cell this page showed running has no captured run any more: not `[*]` for ever. */
  private release(cell: ICodeCellModel): void {
    if (this.shownRunning.delete(cell.id) && cell.executionState === 'running') {
      cell.executionState = 'idle';
    }
  }

  private socket: WebSocket | null = null;
  private reconnectTimer = 0;
  private failures = 0;
  private disposed = false;
  private pending = new Set<string>();
  private waitingForReady = false;
  /** Cells this page ran itself, with the id of the run they held then. */
  private readonly ranHere = new Map<string, string | null>();
  /** Cells this page shows as running on the server's word. */
  private readonly shownRunning = new Set<string>();
}
