/**
 * One open notebook page following the server's captured outputs.
 *
 * JupyterLab shows the output of an execution only in the page that started it: a page
 * reopened while a cell runs shows that cell empty. This follows the notebook's
 * executions through the extension's websocket (`/api/persist/follow?path=`) and puts
 * the outputs of executions the page did not start into their cells, with the running
 * prompt, until they end. The page then saves them as it saves anything.
 */
import { URLExt } from '@jupyterlab/coreutils';
import type { ICodeCellModel } from '@jupyterlab/cells';
import type * as nbformat from '@jupyterlab/nbformat';
import { NotebookActions, type NotebookPanel } from '@jupyterlab/notebook';
import { ServerConnection } from '@jupyterlab/services';
import { Signal } from '@lumino/signaling';

import { FollowMessage, FollowState, sameOutputs, shouldShow } from './follow';

/** Seconds between reconnection attempts after the follow socket drops. */
const RECONNECT_DELAY_MS = 3000;

export class NotebookFollower {
  readonly state = new FollowState();
  /** Emitted whenever the state or the connection changed. */
  readonly changed = new Signal<this, void>(this);
  connected = false;

  constructor(
    private readonly panel: NotebookPanel,
    private readonly serverSettings: ServerConnection.ISettings = ServerConnection.makeSettings()
  ) {
    this.path = panel.context.path;
    panel.context.pathChanged.connect(this.onPathChanged, this);
    panel.disposed.connect(() => this.dispose());
    NotebookActions.executionScheduled.connect(this.onExecutionScheduled, this);
    // Opened as soon as the page exists, before the file loads: from then on the
    // server leaves the file to this page (no "File Changed" at its next save).
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
    this.socket?.close();
    this.socket = null;
    Signal.clearData(this);
  }

  private connect(): void {
    if (this.disposed) {
      return;
    }
    const settings = this.serverSettings;
    let url =
      URLExt.join(settings.wsUrl, 'api/persist/follow') +
      `?path=${encodeURIComponent(this.path)}`;
    if (settings.token) {
      url += `&token=${encodeURIComponent(settings.token)}`;
    }
    const socket = new settings.WebSocket(url);
    this.socket = socket;
    socket.onmessage = event => this.onMessage(String(event.data));
    socket.onclose = () => {
      if (this.socket !== socket) {
        return;
      }
      this.socket = null;
      this.setConnected(false);
      if (!this.disposed) {
        this.reconnectTimer = window.setTimeout(() => this.connect(), RECONNECT_DELAY_MS);
      }
    };
  }

  /**
   * The page runs a cell itself: from then on its own run owns the cell's outputs
   * (JupyterLab has cleared them and adds the new run's), even while an earlier run
   * by another page still prints.
   */
  private onExecutionScheduled(
    _: unknown,
    args: { notebook: NotebookPanel['content']; cell: { model: { id: string } } }
  ): void {
    if (args.notebook === this.panel.content) {
      this.ranHere.add(args.cell.model.id);
    }
  }

  private onPathChanged(): void {
    this.path = this.panel.context.path;
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
    this.connected = true;
    this.pending = new Set([...this.pending, ...changed]);
    this.showPending();
    this.changed.emit();
  }

  /** Put the pending cells' captured outputs into the page, once its model is ready. */
  private showPending(): void {
    if (!this.panel.context.isReady) {
      if (!this.waitingForReady) {
        this.waitingForReady = true;
        void this.panel.context.ready.then(() => {
          this.waitingForReady = false;
          this.showPending();
        });
      }
      return;
    }
    const model = this.panel.content.model;
    if (!model) {
      return;
    }
    const ownClientId = this.panel.sessionContext.session?.kernel?.clientId;
    const pending = this.pending;
    this.pending = new Set();
    for (const cellModel of model.cells) {
      if (
        cellModel.type !== 'code' ||
        !pending.has(cellModel.id) ||
        this.ranHere.has(cellModel.id)
      ) {
        continue;
      }
      const captured = this.state.cells.get(cellModel.id);
      if (!captured || !shouldShow(captured, ownClientId, this.state.collaborative)) {
        continue;
      }
      const cell = cellModel as ICodeCellModel;
      const current = cell.outputs.toJSON() as nbformat.IOutput[];
      if (!sameOutputs(current, captured.outputs)) {
        // Whole, not edited in place: JupyterLab's stream merging keeps state that
        // partial edits leave stale.
        cell.outputs.fromJSON(captured.outputs as nbformat.IOutput[]);
      }
      // As JupyterLab shows a run: no count and `[*]` while it runs (setting a count
      // marks the cell idle), the count once it is over.
      const executionCount = captured.running ? null : captured.executionCount;
      if (cell.executionCount !== executionCount) {
        cell.executionCount = executionCount;
      }
      const executionState = captured.running ? 'running' : 'idle';
      if (cell.executionState !== executionState) {
        cell.executionState = executionState;
      }
    }
  }

  private path: string;
  private socket: WebSocket | null = null;
  private reconnectTimer = 0;
  private disposed = false;
  private pending = new Set<string>();
  private waitingForReady = false;
  private readonly ranHere = new Set<string>();
}
