/**
 * What the server's follow socket says, folded into each cell's captured execution,
 * and what a page should do with it. Pure: no JupyterLab, no DOM (unit-tested with jest).
 *
 * The messages are described in the server's `jupyter_persist/api/follow.py`.
 */

/** One nbformat output, as JSON. */
export type Output = { [key: string]: any };

/** One cell's latest execution, as the follow socket describes a change to it. */
export interface Change {
  msg_id: string;
  cell_id: string;
  keep: number;
  keep_text: number;
  tail: Output[];
  execution_count: number | null;
  running: boolean;
  client_session: string | null;
  written?: boolean;
}

/** A follow socket message. */
export interface FollowMessage {
  type: 'snapshot' | 'update';
  collaborative?: boolean;
  executions: Change[];
  gone?: string[];
}

/** A cell's captured execution, whole. */
export interface CapturedCell {
  msgId: string;
  outputs: Output[];
  executionCount: number | null;
  running: boolean;
  clientSession: string | null;
  /** Whether the server knows these outputs to be in the file. */
  written: boolean;
}

/**
 * Rebuild outputs from the previous ones and a diff: `old.slice(0, keep)` unchanged;
 * when `keepText` > 0 the first tail output is a stream continuing `old[keep]`'s text.
 */
export function applyDiff(
  old: Output[],
  keep: number,
  keepText: number,
  tail: Output[]
): Output[] {
  const result = old.slice(0, keep);
  tail.forEach((output, index) => {
    if (index === 0 && keepText > 0) {
      const previous = String(old[keep]?.text ?? '');
      result.push({ ...output, text: previous.slice(0, keepText) + output.text });
    } else {
      result.push(output);
    }
  });
  return result;
}

/** The executions the server captured for one notebook, kept up to date. */
export class FollowState {
  readonly cells = new Map<string, CapturedCell>();
  collaborative = false;
  /** Runs this state saw running (the page follows them to their end). */
  readonly seenRunning = new Set<string>();

  /** Fold one message in; returns the ids of the cells that changed (or went). */
  apply(message: FollowMessage): string[] {
    const changed: string[] = [];
    if (message.type === 'snapshot') {
      // A snapshot after a reconnect: cells it no longer has changed too.
      changed.push(...this.cells.keys());
      this.cells.clear();
      this.collaborative = Boolean(message.collaborative);
    }
    for (const cellId of message.gone ?? []) {
      this.cells.delete(cellId);
      changed.push(cellId);
    }
    for (const change of message.executions) {
      const before = this.cells.get(change.cell_id);
      const old = before && before.msgId === change.msg_id ? before.outputs : [];
      this.cells.set(change.cell_id, {
        msgId: change.msg_id,
        outputs: applyDiff(old, change.keep, change.keep_text, change.tail),
        executionCount: change.execution_count,
        running: change.running,
        clientSession: change.client_session,
        written: Boolean(change.written)
      });
      if (change.running) {
        this.seenRunning.add(change.msg_id);
      }
      changed.push(change.cell_id);
    }
    return changed;
  }

  /** Cells whose execution still runs. */
  runningCount(): number {
    let count = 0;
    this.cells.forEach(cell => {
      if (cell.running) {
        count += 1;
      }
    });
    return count;
  }
}

/**
 * Whether the page should put a captured execution into its cell.
 *
 * Not when the page ran it itself (its own kernel connection shows it, as always),
 * not with real-time collaboration on (the server writes the room, and the room
 * updates the page), and not a finished run already in the file the page loaded,
 * unless the page followed it while it ran: the file is what the user last saved,
 * and may have had those outputs cleared.
 */
export function shouldShow(
  cell: CapturedCell,
  ownClientId: string | null | undefined,
  state: Pick<FollowState, 'collaborative' | 'seenRunning'>
): boolean {
  if (state.collaborative) {
    return false;
  }
  if (ownClientId && cell.clientSession === ownClientId) {
    return false;
  }
  return cell.running || !cell.written || state.seenRunning.has(cell.msgId);
}

/** Milliseconds before the next attempt after `failures` failed connections in a row. */
export function reconnectDelay(failures: number): number {
  return Math.min(3000 * 2 ** Math.max(failures - 1, 0), 60000);
}

/** Outputs equal as the file would hold them (multi-line strings joined). */
export function sameOutputs(a: Output[], b: Output[]): boolean {
  if (a.length !== b.length) {
    return false;
  }
  return a.every((output, index) => stableJSON(output) === stableJSON(b[index]));
}

function stableJSON(value: any): string {
  return JSON.stringify(normalize(value));
}

function normalize(value: any): any {
  if (Array.isArray(value)) {
    return value.map(normalize);
  }
  if (value && typeof value === 'object') {
    const result: { [key: string]: any } = {};
    for (const key of Object.keys(value).sort()) {
      if (key === 'transient') {
        continue;
      }
      const item = value[key];
      const joinable =
        (key === 'text' || isMimeBundleKey(value, key)) &&
        Array.isArray(item) &&
        item.every(line => typeof line === 'string');
      result[key] = joinable ? item.join('') : normalize(item);
    }
    return result;
  }
  return value;
}

function isMimeBundleKey(container: { [key: string]: any }, key: string): boolean {
  return key.includes('/') && !('output_type' in container);
}

/** What the toolbar indicator says. */
export interface IndicatorText {
  label: string;
  title: string;
}

/** The indicator's label and tooltip for a connection state and a running count. */
export function indicatorText(connected: boolean, running: number): IndicatorText {
  if (!connected) {
    return {
      label: 'Outputs kept · offline',
      title:
        'jupyter-persist: not connected to the server; it keeps capturing outputs, ' +
        'and this page shows them again once it reconnects.'
    };
  }
  if (running === 0) {
    return {
      label: 'Outputs kept',
      title:
        "jupyter-persist: the server keeps every output of this notebook's cells, " +
        'even while no page is open.'
    };
  }
  const cells = running === 1 ? '1 running cell' : `${running} running cells`;
  return {
    label: `Outputs kept · ${running} running`,
    title:
      `jupyter-persist: the server keeps the outputs of ${cells}; ` +
      'this page shows them as they arrive, also for cells run before it was opened.'
  };
}
