/**
 * The notebook toolbar item saying that the server keeps this notebook's outputs.
 */
import { Widget } from '@lumino/widgets';

import { indicatorText } from './follow';
import type { NotebookFollower } from './notebook';

export class PersistIndicator extends Widget {
  constructor(private readonly follower: NotebookFollower) {
    super();
    this.addClass('jp-persist-Indicator');
    // A live region: screen readers hear the running count change, politely.
    this.node.setAttribute('role', 'status');
    this.node.setAttribute('aria-live', 'polite');
    follower.changed.connect(this.refresh, this);
    this.refresh();
  }

  private refresh(): void {
    const { label, title } = indicatorText(
      this.follower.connected,
      this.follower.state.runningCount()
    );
    this.node.textContent = label;
    this.node.title = title;
    this.node.setAttribute('aria-label', title);
    this.node.dataset.connected = String(this.follower.connected);
  }
}
