/**
 * The prompts a load test sends, pure given a random source: `synthetic` prompts of random
 * common words at a set length, or `natural` readable questions.
 */

/** How prompts are made: random common words of a set length, or readable questions. */
export type PromptStyle = 'synthetic' | 'natural';

const WORDS =
  'the of and to in is that for it as was with be by on not he this are or his from at which but have an they you were her she there been one all we their has would when if so no will more can who its time out up two may into only other new some could these then first any my now such like our over man me even most made after also did many well must through back years where much your way down should because each just those people how too little state good very make world still own see men work long get here between both life being under never day same another know while last might us great old year off come since against go came right used take three'.split(
    ' ',
  );

/** A prompt of about `tokens` tokens: random common English words (one token each, roughly). */
export function makePrompt(tokens: number, random: () => number): string {
  const words: string[] = [];
  for (let i = 0; i < tokens; i += 1) {
    words.push(WORDS[Math.floor(random() * WORDS.length)] as string);
  }
  return words.join(' ');
}

const QUESTIONS = [
  'Tell me in a few sentences what everyone should know about {}.',
  'Explain {} in simple terms.',
  'Give two reasons why people care about {}.',
  'Write a short paragraph about {}.',
  'What are the main ideas behind {}?',
  'How would you explain {} to a ten-year-old?',
  'Summarize the history of {} briefly.',
  'Name three common misconceptions about {} and correct them.',
];

const SUBJECTS = [
  'photosynthesis',
  'the water cycle',
  'plate tectonics',
  'the theory of relativity',
  'machine learning',
  'how the internet routes packets',
  'black holes',
  'vaccines',
  'inflation',
  'the French Revolution',
  'the immune system',
  'solar power',
  'compilers',
  'public-key cryptography',
  'the Roman Empire',
  'climate change',
  'DNA replication',
  'supply and demand',
  'the printing press',
  'neural networks',
  'ocean tides',
  'volcanoes',
  'the Renaissance',
  'electric cars',
  'sleep',
  'coral reefs',
  'the stock market',
  'gravity',
  'antibiotics',
  'democracy',
  'jazz',
  'the Moon landing',
  'rainbows',
  'earthquakes',
  'honey bees',
  'the periodic table',
  'quantum computing',
  'recycling',
  'hash tables',
  'the human heart',
];

/**
 * A readable question, e.g. `Explain black holes in simple terms.`: one of a few question
 * forms about one of forty everyday subjects, drawn with `random`. Pure given `random`.
 */
export function makeQuestion(random: () => number): string {
  const form = QUESTIONS[Math.floor(random() * QUESTIONS.length)] as string;
  return form.replace('{}', SUBJECTS[Math.floor(random() * SUBJECTS.length)] as string);
}
