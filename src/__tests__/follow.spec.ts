import {
  applyDiff,
  Change,
  FollowState,
  indicatorText,
  reconnectDelay,
  sameOutputs,
  shouldShow
} from '../follow';

const stream = (text: string, name = 'stdout') => ({ output_type: 'stream', name, text });

function change(partial: Partial<Change>): Change {
  return {
    msg_id: 'm1',
    cell_id: 'c1',
    keep: 0,
    keep_text: 0,
    tail: [],
    execution_count: null,
    running: true,
    client_session: 'runner',
    ...partial
  };
}

describe('applyDiff', () => {
  it('keeps outputs and continues a stream', () => {
    const old = [stream('a\n'), stream('0\n1\n', 'stderr')];
    expect(applyDiff(old, 1, 4, [stream('2\n', 'stderr')])).toEqual([
      stream('a\n'),
      stream('0\n1\n2\n', 'stderr')
    ]);
  });

  it('rewrites the end of a stream (a carriage return)', () => {
    expect(applyDiff([stream('10%')], 0, 0, [stream('20%')])).toEqual([stream('20%')]);
    expect(applyDiff([stream('ok\n10%')], 0, 3, [stream('20%')])).toEqual([stream('ok\n20%')]);
  });

  it('drops outputs beyond keep (a clear)', () => {
    expect(applyDiff([stream('a\n'), stream('b\n', 'stderr')], 0, 0, [])).toEqual([]);
  });

  it('counts kept text in UTF-16 code units, as the server sends it', () => {
    // "🚀" is one character for Python and two code units for JavaScript.
    expect(applyDiff([stream('🚀a')], 0, 3, [stream('b')])).toEqual([stream('🚀ab')]);
  });

  it('does not change the old outputs', () => {
    const old = [stream('a\n')];
    applyDiff(old, 0, 2, [stream('b\n')]);
    expect(old).toEqual([stream('a\n')]);
  });
});

describe('FollowState', () => {
  it('folds a snapshot and updates by cell', () => {
    const state = new FollowState();
    expect(
      state.apply({
        type: 'snapshot',
        collaborative: false,
        executions: [change({ tail: [stream('0\n')], execution_count: 2 })]
      })
    ).toEqual(['c1']);
    expect(state.runningCount()).toBe(1);
    state.apply({
      type: 'update',
      executions: [change({ keep_text: 2, tail: [stream('1\n')], execution_count: 2 })]
    });
    expect(state.cells.get('c1')?.outputs).toEqual([stream('0\n1\n')]);
    state.apply({
      type: 'update',
      executions: [change({ keep: 1, running: false, execution_count: 2 })]
    });
    expect(state.cells.get('c1')).toEqual({
      msgId: 'm1',
      outputs: [stream('0\n1\n')],
      executionCount: 2,
      running: false,
      clientSession: 'runner',
      written: false
    });
    expect(state.runningCount()).toBe(0);
    expect(state.seenRunning.has('m1')).toBe(true);
  });

  it('starts a new execution of a cell from no outputs', () => {
    const state = new FollowState();
    state.apply({ type: 'snapshot', executions: [change({ tail: [stream('old\n')] })] });
    state.apply({
      type: 'update',
      executions: [change({ msg_id: 'm2', keep: 1, keep_text: 0, tail: [stream('new\n')] })]
    });
    // keep counts against the new execution's own earlier outputs: there are none.
    expect(state.cells.get('c1')?.outputs).toEqual([stream('new\n')]);
  });

  it('forgets cells that are gone, and a new snapshot replaces everything', () => {
    const state = new FollowState();
    state.apply({
      type: 'snapshot',
      executions: [change({}), change({ cell_id: 'c2', msg_id: 'm2' })]
    });
    expect(state.apply({ type: 'update', executions: [], gone: ['c1'] })).toEqual(['c1']);
    expect([...state.cells.keys()]).toEqual(['c2']);
    // A snapshot after a reconnect: the cells it lacks changed too.
    expect(state.apply({ type: 'snapshot', collaborative: true, executions: [] })).toEqual([
      'c2'
    ]);
    expect(state.cells.size).toBe(0);
    expect(state.collaborative).toBe(true);
  });
});

describe('shouldShow', () => {
  const cell = {
    msgId: 'm1',
    outputs: [],
    executionCount: 1,
    running: true,
    clientSession: 'runner',
    written: false
  };
  const following = { collaborative: false, seenRunning: new Set<string>() };

  it('shows what another page ran', () => {
    expect(shouldShow(cell, 'reopened', following)).toBe(true);
    expect(shouldShow(cell, undefined, following)).toBe(true);
  });

  it('leaves alone what this page ran, and everything under collaboration', () => {
    expect(shouldShow(cell, 'runner', following)).toBe(false);
    expect(shouldShow(cell, 'reopened', { ...following, collaborative: true })).toBe(false);
  });

  it('leaves a finished run that is in the file to the file (it may have been cleared)', () => {
    const done = { ...cell, running: false, written: true };
    expect(shouldShow(done, 'reopened', following)).toBe(false);
    expect(shouldShow({ ...done, written: false }, 'reopened', following)).toBe(true);
    // Followed while it ran: shown to its end.
    expect(shouldShow(done, 'reopened', { ...following, seenRunning: new Set(['m1']) })).toBe(
      true
    );
  });
});

describe('reconnectDelay', () => {
  it('backs off to a minute', () => {
    expect([1, 2, 3, 10].map(reconnectDelay)).toEqual([3000, 6000, 12000, 60000]);
  });
});

describe('sameOutputs', () => {
  it('compares as the file would hold outputs', () => {
    expect(sameOutputs([stream('a\nb\n')], [{ ...stream(''), text: ['a\n', 'b\n'] }])).toBe(
      true
    );
    const display = (plain: string | string[]) => ({
      output_type: 'display_data',
      data: { 'text/plain': plain },
      metadata: {},
      transient: { display_id: 'd' }
    });
    expect(sameOutputs([display('x\ny')], [display(['x\n', 'y'])])).toBe(true);
    expect(sameOutputs([stream('a')], [stream('b')])).toBe(false);
    expect(sameOutputs([stream('a')], [])).toBe(false);
  });
});

describe('indicatorText', () => {
  it('says what is kept and how much runs', () => {
    expect(indicatorText(true, 0).label).toBe('Outputs kept');
    expect(indicatorText(true, 2).label).toBe('Outputs kept · 2 running');
    expect(indicatorText(true, 1).title).toContain('1 running cell;');
    expect(indicatorText(false, 3).label).toBe('Outputs kept · offline');
  });
});
