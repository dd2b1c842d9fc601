import { classifyProviderError, type NodeProvider } from '@es/pool';
import type { Metrics, ProviderOperation } from './metrics.js';

/**
 * Wrap a provider so every submit/list/cancel/release (sbatch/squeue/scancel/scontrol on
 * SLURM) is counted by outcome: `ok` or its failure class. Errors pass through unchanged.
 */
export function instrumentProvider<P extends NodeProvider>(provider: P, metrics: Metrics): P {
  const track = async <T>(operation: ProviderOperation, run: () => Promise<T>): Promise<T> => {
    try {
      const result = await run();
      metrics.observeProviderCall(provider.kind, operation, 'ok');
      return result;
    } catch (error) {
      metrics.observeProviderCall(provider.kind, operation, classifyProviderError(error).kind);
      throw error;
    }
  };
  // A proxy keeps the provider's other methods (the local provider's preempt, close ...).
  return new Proxy(provider, {
    get(target, property, receiver) {
      if (property === 'submit') {
        return (request: Parameters<NodeProvider['submit']>[0]) =>
          track('submit', () => target.submit(request));
      }
      if (property === 'list') {
        return (filter: Parameters<NodeProvider['list']>[0]) =>
          track('list', () => target.list(filter));
      }
      if (property === 'cancel') {
        return (ids: string[]) => track('cancel', () => target.cancel(ids));
      }
      if (property === 'release') {
        const release = target.release?.bind(target);
        return release === undefined
          ? undefined
          : (ids: string[]) => track('release', () => release(ids));
      }
      const value: unknown = Reflect.get(target, property, receiver);
      return typeof value === 'function'
        ? (value as (...a: unknown[]) => unknown).bind(target)
        : value;
    },
  });
}
